#!/usr/bin/env python3
"""Run or test Modeldeck on a fresh machine that has nothing but Python 3.11, 3.12 or 3.13.

    python3 dev.py run [--port N] [--verbose]   # venv, install, migrate, demo data, then web,
                                                # worker, beat and guard until Ctrl-C
    python3 dev.py stop                         # stop a run started elsewhere, model servers too
    python3 dev.py test [pytest arguments]      # venv, install, then the test suite
    python3 dev.py install                      # only the venv and the install

The port also comes from MODELDECK_PORT (default 8000). Everything lands in .venv/ and var/
inside the checkout; nothing is installed system-wide.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / "bin" / "python"
STAMP = VENV / ".modeldeck-installed"
INSTALL_INPUTS = [
    ROOT / "pyproject.toml",
    ROOT / "runtime" / "pyproject.toml",
    ROOT / "client" / "pyproject.toml",
]
VAR = ROOT / "var"
SECRET_KEY_FILE = VAR / "secret_key"
# What a running `dev.py run` leaves for `dev.py stop`: its own pid and its children's.
RUN_FILE = VAR / "dev-run.json"
SUPPORTED_PYTHONS = ((3, 11), (3, 12), (3, 13))
DEFAULT_PORT = 8000
# Lines of the banner that are commands start with this; .ci/readme-run-smoke.sh runs them.
COMMAND_PREFIX = "  $ "


def say(message: str) -> None:
    print(f"\033[1m==> {message}\033[0m", flush=True)


def python_is_supported(version: tuple[int, int]) -> bool:
    return version in SUPPORTED_PYTHONS


def ensure_environment() -> None:
    """Create .venv and install Modeldeck with its test tools, skipping work already done."""
    if not python_is_supported(sys.version_info[:2]):
        wanted = ", ".join(f"{major}.{minor}" for major, minor in SUPPORTED_PYTHONS)
        sys.exit(f"Modeldeck needs Python {wanted}; this is {sys.version.split()[0]}.")
    if not PYTHON.exists():
        say("Creating .venv")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    fingerprint = hashlib.sha256(
        b"".join(path.read_bytes() for path in INSTALL_INPUTS if path.exists())
    ).hexdigest()
    if STAMP.exists() and STAMP.read_text() == fingerprint:
        return
    say("Installing Modeldeck and its dependencies into .venv (first run takes a few minutes)")
    pip = [str(PYTHON), "-m", "pip", "install", "--disable-pip-version-check", "--quiet"]
    # setuptools too: the one a new venv brings has published advisories (.ci/audit.sh).
    subprocess.run([*pip, "--upgrade", "pip", "setuptools>=78.1.1"], check=True)
    subprocess.run(
        [*pip, "-e", f"{ROOT}[dev]", "-e", str(ROOT / "runtime"), "-e", str(ROOT / "client")],
        check=True,
    )
    STAMP.write_text(fingerprint)


def ensure_secret_key() -> None:
    """Write a random SECRET_KEY once to var/secret_key (0600 in a 0700 var/); the settings of
    every process of the stack, and of `manage.py`, read it from there."""
    VAR.mkdir(exist_ok=True)
    VAR.chmod(0o700)
    if SECRET_KEY_FILE.exists():
        SECRET_KEY_FILE.chmod(0o600)
        return
    # O_EXCL: two first runs at once must not write two different keys.
    with contextlib.suppress(FileExistsError):
        descriptor = os.open(SECRET_KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_urlsafe(50) + "\n")


def manage(*args: str, env: dict[str, str]) -> str:
    """Run a manage.py command quietly; print its output and stop only when it fails."""
    result = subprocess.run(
        [str(PYTHON), "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
        sys.exit(f"manage.py {' '.join(args)} failed (exit code {result.returncode}).")
    return result.stdout + result.stderr


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As servers bind: connections of a stopped server in TIME_WAIT do not count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pid_is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_run_file() -> dict | None:
    try:
        return json.loads(RUN_FILE.read_text())
    except (OSError, ValueError):
        return None


def stack_environment(port: int, verbose: bool) -> dict[str, str]:
    env = {**os.environ, "DEBUG": os.environ.get("DEBUG", "true")}
    # Gateways on this machine post their prediction log here: it must follow the port.
    env.setdefault("MODELDECK_INTERNAL_URL", f"http://127.0.0.1:{port}")
    if not verbose:
        env.setdefault("LOG_LEVEL", "WARNING")
    return env


def process_commands(port: int, verbose: bool) -> dict[str, list[str]]:
    bin_dir = VENV / "bin"
    level = "INFO" if verbose else "WARNING"
    web = [str(bin_dir / "gunicorn"), "config.wsgi", "--bind", f"127.0.0.1:{port}"]
    web += ["--workers", "2", "--threads", "4", "--log-level", level.lower()]
    if verbose:
        web += ["--access-logfile", "-"]
    celery = [str(bin_dir / "celery"), "-A", "config"]
    if not verbose:
        celery.append("--quiet")  # no start-up banner
    return {
        "web": web,
        "worker": [*celery, "worker", "--loglevel", level, "--concurrency", "2"],
        "beat": [
            *celery,
            "beat",
            "--loglevel",
            level,
            "--schedule",
            str(VAR / "celerybeat-schedule"),
        ],
        # Scrapes and judges rollback policies without the broker (monitoring's guard command).
        "guard": [str(PYTHON), "manage.py", "guard"],
    }


def wait_until_serving(port: int, running: dict[str, subprocess.Popen]) -> bool:
    """Wait for the web process to answer /healthz; False when a process died first."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if any(process.poll() is not None for process in running.values()):
            return False
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response,
        ):
            if response.status == 200:
                return True
        time.sleep(0.5)
    return False


def banner(url: str, credentials: tuple[str, str] | None) -> str:
    python = ".venv/bin/python"
    lines = [f"Modeldeck is running at {url}", ""]
    if credentials:
        user, password = credentials
        lines += [
            f"Sign in as {user} / {password}",
            "(this password is shown on this first run only)",
        ]
    else:
        lines += [
            "Sign in as admin (its password was shown on the first run); to set a new one:",
            f"{COMMAND_PREFIX}{python} manage.py changepassword admin",
        ]
    lines += [
        "",
        "Add a member to the demo team, and make an API token (from this folder):",
        f"{COMMAND_PREFIX}{python} manage.py addmember alice demo viewer --create-user",
        f"{COMMAND_PREFIX}{python} manage.py createtoken admin demo --name laptop --days 30",
        "",
        "Stop everything (model servers and gateways too): Ctrl-C here, or",
        f"{COMMAND_PREFIX}python3 dev.py stop",
    ]
    rule = "=" * 72
    return "\n".join([rule, *lines, rule])


def stop_processes(running: dict[str, int], children: list[subprocess.Popen] = ()) -> None:
    """SIGTERM each process (its own session leader; it stops its children), wait, then
    SIGKILL whatever is left in their process groups. `children` are reaped while waiting
    (a zombie still counts as a member of its group)."""
    started = time.monotonic()
    for name in running:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(running[name], signal.SIGTERM)
    deadline = started + 20
    while time.monotonic() < deadline:
        for child in children:
            child.poll()
        if not any(map(group_is_alive, running.values())):
            break
        time.sleep(0.2)
    for group in running.values():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)


def group_is_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_model_servers(env: dict[str, str]) -> int:
    """Stop the version servers and gateways the local target started (they run detached)."""
    output = manage(
        "shell",
        "-c",
        "from deployments.services import local_processes_stop_all as s; print(s())",
        env=env,
    )
    match = re.search(r"(\d+)\s*$", output.strip())
    return int(match.group(1)) if match else 0


def run(port: int, verbose: bool) -> None:
    """Migrate, load demo data, and run web, worker, beat and guard in the foreground until
    Ctrl-C or `dev.py stop`; then stop them and every model server the run started."""
    previous = read_run_file()
    if previous and pid_is_alive(previous.get("pid", 0)):
        sys.exit(
            f"Modeldeck already runs from this folder at {previous.get('url')} "
            f"(pid {previous['pid']}); stop it with `python3 dev.py stop`."
        )
    if not port_is_free(port):
        sys.exit(
            f"Port {port} is busy. Stop what uses it, or choose another port: "
            f"`python3 dev.py run --port {port + 1}` (or MODELDECK_PORT={port + 1})."
        )
    ensure_secret_key()
    env = stack_environment(port, verbose)
    url = f"http://127.0.0.1:{port}"
    say("Migrating the database")
    manage("migrate", "--no-input", env=env)
    say("Loading demo data and deploying the demo endpoint")
    output = manage("quickstart", env=env)
    match = re.search(r"Demo admin created: (\S+) / (\S+)", output)
    credentials = (match.group(1), match.group(2)) if match else None
    if verbose:
        print(output.replace(match.group(2), "********") if match else output)
    say(f"Starting web, worker, beat and guard on {url}")
    running: dict[str, subprocess.Popen] = {}

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    # Also when started with SIGINT ignored (from a script's background job): Ctrl-C must stop.
    signal.signal(signal.SIGINT, on_signal)
    reason = "Stopping"
    try:
        for name, argv in process_commands(port, verbose).items():
            # Own session: Ctrl-C reaches only dev.py, which stops them in a safe order.
            running[name] = subprocess.Popen(argv, cwd=ROOT, env=env, start_new_session=True)
        RUN_FILE.write_text(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "url": url,
                    "groups": {name: process.pid for name, process in running.items()},
                }
            )
        )
        if not wait_until_serving(port, running):
            dead = [name for name, process in running.items() if process.poll() is not None]
            reason = f"{', '.join(dead) or 'web'} did not start; stopping the rest"
        else:
            print("\n" + banner(url, credentials) + "\n", flush=True)
            while all(process.poll() is None for process in running.values()):
                time.sleep(1)
            dead = [name for name, process in running.items() if process.poll() is not None]
            reason = f"{', '.join(dead)} stopped; stopping the rest"
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut this short
        say(reason if reason != "Stopping" else "Stopping web, worker, beat and guard")
        stop_processes(
            {name: process.pid for name, process in running.items()}, list(running.values())
        )
        stopped = stop_model_servers(env)
        say(f"Stopped {stopped} model server(s) and gateway(s); everything is down")
        with contextlib.suppress(OSError):
            current = read_run_file()
            if current and current.get("pid") == os.getpid():
                RUN_FILE.unlink()


def stop() -> None:
    """Stop a `dev.py run` of this folder from another terminal (or what a killed one left)."""
    state = read_run_file()
    if state and pid_is_alive(state.get("pid", 0)):
        say(f"Stopping the run at {state.get('url')} (pid {state['pid']})")
        os.kill(state["pid"], signal.SIGTERM)
        deadline = time.monotonic() + 60
        while pid_is_alive(state["pid"]) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not pid_is_alive(state["pid"]):
            say("Everything is down")
            return
    if state:
        stop_processes({name: int(group) for name, group in state.get("groups", {}).items()})
    ensure_secret_key()
    stopped = stop_model_servers(stack_environment(DEFAULT_PORT, verbose=False))
    with contextlib.suppress(OSError):
        RUN_FILE.unlink()
    say(f"Stopped {stopped} model server(s) and gateway(s); everything is down")


# Most parallel test workers `dev.py test` starts (pytest-xdist): each runs model servers,
# gateways and browsers of its own, so more than a few mostly wait for each other.
MAX_TEST_WORKERS = 4
# `-s` alone or among other one-letter flags that take no value (`-xs`, `-sv`).
SHOW_OUTPUT = re.compile(r"-[lqvx]*s[lqsvx]*")


def runs_in_one_process(arguments: list[str]) -> bool:
    """Whether these pytest arguments (PYTEST_ADDOPTS' too) must run in one process: the caller
    chose the workers (`-n`, `--numprocesses`, `-p no:xdist`), debugs (`--pdb`, `--trace`, `-s`
    or `-xs`, `--capture=no`: a debugger and uncaptured output need the tests in this process),
    or names single tests (`path::test`: starting workers would cost more than it saves)."""
    previous = ""
    for index, argument in enumerate(arguments):
        following = arguments[index + 1] if index + 1 < len(arguments) else ""
        if argument.startswith(("-n", "--numprocesses", "-pno:xdist")):
            return True
        if argument in ("--pdb", "--trace", "--capture=no") or SHOW_OUTPUT.fullmatch(argument):
            return True
        if (argument, following) in (("-p", "no:xdist"), ("--capture", "no")):
            return True
        if "::" in argument and not argument.startswith("-") and previous != "--deselect":
            return True
        previous = argument
    return False


def pytest_arguments(arguments: list[str], cpus: int | None, addopts: str = "") -> list[str]:
    """`arguments` with `-n N --dist loadfile` in front (N = the cores, at most
    MAX_TEST_WORKERS) unless the run must stay in one process (see runs_in_one_process) or there
    is only one core. loadfile runs each file's tests on one worker, in file order: the browser
    journeys of a module build on each other. (`--dist loadgroup` with `xdist_group` marks did
    not keep them together with pytest 9 and xdist 3.8: tests/common/test_dev_test_command.py.)"""
    workers = min(cpus or 1, MAX_TEST_WORKERS)
    if workers < 2 or runs_in_one_process([*shlex.split(addopts), *arguments]):
        return arguments
    return ["-n", str(workers), "--dist", "loadfile", *arguments]


def test(arguments: list[str]) -> int:
    """Run the test suite with pytest; returns its exit code. It runs on one pytest-xdist worker
    per core, at most MAX_TEST_WORKERS (each worker has its own var dir, test database and block
    of LOCAL_TARGET_PORT_RANGE: config/settings/test.py, tests/conftest.py), unless the arguments
    say otherwise (`-n 0`, `-p no:xdist`, `--pdb`, `-s`, single tests: runs_in_one_process).
    Most of the suite waits on processes it starts (servers, browsers, Docker builds), so on two
    cores `-n 2` ran the whole suite in 9:04 against 15:01 serially, back to back."""
    arguments = pytest_arguments(arguments, os.cpu_count(), os.environ.get("PYTEST_ADDOPTS", ""))
    return subprocess.run([str(PYTHON), "-m", "pytest", *arguments], cwd=ROOT).returncode


def port_from_environment() -> int:
    value = os.environ.get("MODELDECK_PORT", str(DEFAULT_PORT))
    try:
        return parse_port(value)
    except argparse.ArgumentTypeError as error:
        sys.exit(f"MODELDECK_PORT: {error}")


def parse_port(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise argparse.ArgumentTypeError(f"a port is a number from 1 to 65535, not {value!r}")
    return int(value)


def main() -> None:
    command, *rest = sys.argv[1:] or ["run"]
    if command not in {"run", "stop", "test", "install"}:
        sys.exit(__doc__)
    if command == "run":
        parser = argparse.ArgumentParser(prog="dev.py run")
        parser.add_argument("--port", type=parse_port, default=None)
        parser.add_argument("--verbose", action="store_true", help="access and info logs")
        options = parser.parse_args(rest)
        port = options.port or port_from_environment()
        ensure_environment()
        run(port, options.verbose)
    elif command == "stop":
        if not PYTHON.exists():
            sys.exit("Nothing to stop: .venv does not exist yet.")
        stop()
    else:
        ensure_environment()
        ensure_secret_key()  # so `manage.py` works in the checkout right after an install
        if command == "test":
            sys.exit(test(rest))


if __name__ == "__main__":
    main()
