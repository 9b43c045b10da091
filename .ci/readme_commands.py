#!/usr/bin/env python3
"""Run every command of the README and of `dev.py run`'s start-up banner, verbatim, in a fresh
clone, as a new user would (the convention is described at the top of README.md).

    python3 .ci/readme_commands.py [--source DIR] [--port N] [--keep]

Order: each fenced `sh` block of the README in turn (blocks after a
`<!-- readme-test: skip (...) -->` line are left out). `python3 dev.py run ...` starts the stack
in the background and waits for its banner; the banner must give the address and the admin's
first-run password, which must sign in. After the README, the banner's `  $ ` commands run (the
last one, `python3 dev.py stop`, must bring everything down, model servers included). Then a
second `dev.py run` must start cleanly on the same port; its banner's commands run (prompts are
answered through a terminal), and Ctrl-C must stop everything. Standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import http.cookiejar
import os
import pty
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

SKIP_MARKER = re.compile(r"^<!--\s*readme-test:\s*skip\b.*-->$")
BANNER_COMMAND = "  $ "
RULE = "=" * 72
PROMPT_ANSWER = "Readme-Test-Passw0rd-2026"


def say(message: str) -> None:
    print(f"--> {message}", flush=True)


def readme_commands(readme: str) -> list[str]:
    """The lines of every fenced sh block not marked to skip, in order."""
    commands: list[str] = []
    lines = readme.splitlines()
    skip_next_block = False
    inside = False
    for line in lines:
        stripped = line.strip()
        if not inside and SKIP_MARKER.search(stripped):
            skip_next_block = True
        elif not inside and stripped.startswith("```"):
            inside = True
            language = stripped[3:].strip()
            running = language == "sh" and not skip_next_block
            skip_next_block = False
        elif inside and stripped.startswith("```"):
            inside = False
        elif inside and running and stripped and not stripped.startswith("#"):
            commands.append(stripped)
    return commands


def is_run(command: str) -> bool:
    return re.match(r"^python3 dev\.py run\b", command) is not None


def is_test(command: str) -> bool:
    return re.match(r"^python3 dev\.py test\b", command) is not None


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As servers bind: connections of a stopped server in TIME_WAIT do not count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def processes_of(clone: Path) -> dict[int, str]:
    """pid -> command line of every process started from the clone (its venv or its folder)."""
    found = {}
    marker = str(clone)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command_line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if marker in command_line or cwd == marker or cwd.startswith(marker + "/"):
            found[int(entry.name)] = command_line.strip()
    return found


def in_one_shell(command: str, clone: Path) -> str:
    """`command` as a reader runs it in one terminal: what earlier lines exported (`export
    TOKEN=...`) is set for it, and what it exports is kept for the next line."""
    state = clone / ".readme-shell-state"
    return f"[ -f {state} ] && . {state}\n{command}\nstatus=$?; export -p > {state}; exit $status"


def run_in_terminal(command: str, *, cwd: Path, env: dict[str, str], timeout: float) -> str:
    """Run `command` with a terminal (answering password prompts); its output, or fail."""
    pid, master = pty.fork()
    if pid == 0:  # child
        os.chdir(cwd)
        os.execvpe("bash", ["bash", "-c", command], env)  # noqa: S606 (the README's own line)
    output = b""
    answered = 0  # prompts before this offset are answered
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
            if re.search(rb"[Pp]assword[^\n:]*: ?$", output[answered:]):
                answered = len(output)
                os.write(master, PROMPT_ANSWER.encode() + b"\n")
    else:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    os.close(master)
    text = output.decode(errors="replace")
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"FAILED ({code}): {command}\n{text[-4000:]}")
    return text


class Stack:
    """One `dev.py run` started from the README's line, in its own session like a terminal's."""

    def __init__(self, command: str, clone: Path, env: dict[str, str], log: Path) -> None:
        self.command = command
        self.log = log
        handle = log.open("w")
        self.process = subprocess.Popen(
            ["bash", "-c", f"exec {command}"],
            cwd=clone,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_for_banner(self, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace")
            start = text.find("Modeldeck is running at")
            if start >= 0 and RULE in text[start:]:
                return text[start : text.index(RULE, start)].splitlines()
            if self.process.poll() is not None:
                break
            time.sleep(1)
        raise SystemExit(f"no start-up banner from `{self.command}`; its output:\n{self.tail()}")

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-80:])

    def interrupt(self) -> None:
        """What Ctrl-C in its terminal does: SIGINT to its foreground process group."""
        os.killpg(self.process.pid, signal.SIGINT)

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise SystemExit(f"`{self.command}` did not stop; its output:\n{self.tail()}") from None


def sign_in(url: str, username: str, password: str) -> None:
    """Sign in through the login form as a browser would; fail unless it lands signed in."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(jar), urllib.request.ProxyHandler({})
    )
    login = f"{url}/accounts/login/"
    page = opener.open(login, timeout=30).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    if token is None:
        raise SystemExit(f"{login} has no sign-in form")
    body = urllib.parse.urlencode(
        {"csrfmiddlewaretoken": token.group(1), "username": username, "password": password}
    ).encode()
    request = urllib.request.Request(  # noqa: S310 (http://127.0.0.1 from the banner)
        login, data=body, headers={"Referer": login}
    )
    answer = opener.open(request, timeout=30)
    if "/accounts/login/" in answer.geturl():
        raise SystemExit(f"signing in as {username} with the banner's password failed")
    say(f"signed in at {url} as {username} with the banner's password")


def banner_commands(banner: list[str]) -> list[str]:
    return [line[len(BANNER_COMMAND) :] for line in banner if line.startswith(BANNER_COMMAND)]


def check_all_down(clone: Path, port: int, what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        left = processes_of(clone)
        if not left and port_is_free(port):
            say(f"{what}: no process of the clone is left and port {port} is free")
            return
        time.sleep(1)
    listing = "\n".join(f"  {pid}: {line}" for pid, line in processes_of(clone).items())
    raise SystemExit(
        f"{what} left processes running (port {port} free: {port_is_free(port)}):\n{listing}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", default=str(Path(__file__).resolve().parent.parent))
    parser.add_argument("--port", type=int, default=int(os.environ.get("MODELDECK_PORT", 8000)))
    parser.add_argument("--keep", action="store_true", help="keep the clone afterwards")
    options = parser.parse_args()
    clone = Path(tempfile.mkdtemp(prefix="modeldeck-readme-"))
    subprocess.run(["git", "clone", "-q", options.source, str(clone)], check=True)
    env = {**os.environ, "MODELDECK_PORT": str(options.port)}
    for variable in (
        "SECRET_KEY",
        "SECRET_KEY_FILE",
        "MODELDECK_INTERNAL_URL",
        "DEBUG",
        "DJANGO_SETTINGS_MODULE",
        "VIRTUAL_ENV",
    ):
        env.pop(variable, None)
    commands = readme_commands((clone / "README.md").read_text())
    if not commands or not is_run(commands[0]):
        raise SystemExit("the README's first command must be `python3 dev.py run`")
    say(f"{len(commands)} README commands in {clone}; port {options.port}")
    stack: Stack | None = None
    run_command = commands[0]
    banner: list[str] = []
    try:
        for command in commands:
            say(f"$ {command}")
            if is_run(command):
                stack = Stack(command, clone, env, clone / "run-1.log")
                banner = stack.wait_for_banner(timeout=1800)
                print("\n".join(banner), flush=True)
                url = re.search(r"Modeldeck is running at (\S+)", banner[0]).group(1)
                if url != f"http://127.0.0.1:{options.port}":
                    raise SystemExit(f"the banner says {url}, not port {options.port}")
                credentials = re.search(r"^Sign in as (\S+) / (\S+)$", "\n".join(banner), re.M)
                if credentials is None:
                    raise SystemExit("the first run's banner does not give the admin password")
                sign_in(url, credentials.group(1), credentials.group(2))
            elif is_test(command):
                run_in_terminal(
                    command,
                    cwd=clone,
                    env={**env, "PYTEST_ADDOPTS": "--collect-only -q"},
                    timeout=1800,
                )
            else:
                run_in_terminal(in_one_shell(command, clone), cwd=clone, env=env, timeout=600)
        for command in banner_commands(banner):
            say(f"$ {command}   (from the banner)")
            run_in_terminal(command, cwd=clone, env=env, timeout=300)
        if stack is None or not banner_commands(banner)[-1].startswith("python3 dev.py stop"):
            raise SystemExit("the banner's last command must stop the stack")
        if stack.wait(timeout=60) != 0:
            raise SystemExit(f"the first run did not end cleanly:\n{stack.tail()}")
        check_all_down(clone, options.port, "`python3 dev.py stop`")

        say(f"$ {run_command}   (second run)")
        stack = Stack(run_command, clone, env, clone / "run-2.log")
        banner = stack.wait_for_banner(timeout=600)
        print("\n".join(banner), flush=True)
        if re.search(r"^Sign in as \S+ / ", "\n".join(banner), re.M):
            raise SystemExit("the second run's banner shows a password again")
        for command in banner_commands(banner)[:-1]:
            say(f"$ {command}   (from the second banner)")
            run_in_terminal(command, cwd=clone, env=env, timeout=300)
        sign_in(f"http://127.0.0.1:{options.port}", "admin", PROMPT_ANSWER)
        say("Ctrl-C")
        stack.interrupt()
        stack.wait(timeout=120)
        check_all_down(clone, options.port, "Ctrl-C")
        say("$ python3 dev.py stop   (after Ctrl-C: nothing left to stop)")
        run_in_terminal("python3 dev.py stop", cwd=clone, env=env, timeout=120)
        say("every README and banner command ran as written")
    finally:
        say("cleaning up the clone")
        if stack is not None and stack.process.poll() is None:
            stack.interrupt()
            try:
                stack.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(stack.process.pid, signal.SIGKILL)
        for pid in processes_of(clone):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if not options.keep:
            shutil.rmtree(clone, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
