#!/usr/bin/env python3
"""Run or test Modeldeck on a fresh machine that has nothing but Python 3.11.

    python3 dev.py run     # venv, install, migrate, demo data, then web + worker + beat + guard
    python3 dev.py test    # venv, install, then the whole test suite (extra args go to pytest)

Everything lands in .venv/ and var/ inside the checkout; nothing is installed system-wide.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / "bin" / "python"
STAMP = VENV / ".modeldeck-installed"
INSTALL_INPUTS = [ROOT / "pyproject.toml", ROOT / "runtime" / "pyproject.toml"]


def say(message: str) -> None:
    print(f"\033[1m==> {message}\033[0m", flush=True)


def ensure_environment() -> None:
    """Create .venv and install Modeldeck with its test tools, skipping work already done."""
    if sys.version_info[:2] != (3, 11):
        sys.exit(f"Modeldeck needs Python 3.11; this is {sys.version.split()[0]}.")
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
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", f"{ROOT}[dev]", "-e", str(ROOT / "runtime")], check=True)
    STAMP.write_text(fingerprint)


def manage(*args: str, env: dict[str, str]) -> None:
    subprocess.run([str(PYTHON), "manage.py", *args], cwd=ROOT, env=env, check=True)


def run() -> None:
    """Migrate, load demo data, and run web, worker, beat and guard in the foreground until
    Ctrl-C."""
    env = {**os.environ, "DEBUG": os.environ.get("DEBUG", "true")}
    say("Migrating the database")
    manage("migrate", "--no-input", env=env)
    say("Loading demo data")
    manage("quickstart", env=env)
    bin_dir = VENV / "bin"
    processes = {
        "web": [
            str(bin_dir / "gunicorn"),
            "config.wsgi",
            "--bind",
            "127.0.0.1:8000",
            "--workers",
            "2",
            "--threads",
            "4",
            "--access-logfile",
            "-",
        ],
        "worker": [
            str(bin_dir / "celery"),
            "-A",
            "config",
            "worker",
            "--loglevel",
            "INFO",
            "--concurrency",
            "2",
        ],
        "beat": [str(bin_dir / "celery"), "-A", "config", "beat", "--loglevel", "INFO"],
        # Scrapes and judges rollback policies without the broker (monitoring's guard command).
        "guard": [str(PYTHON), "manage.py", "guard"],
    }
    running = {name: subprocess.Popen(argv, cwd=ROOT, env=env) for name, argv in processes.items()}
    say("Modeldeck is running at http://127.0.0.1:8000 (Ctrl-C stops web, worker, beat, guard)")
    try:
        while all(process.poll() is None for process in running.values()):
            time.sleep(1)
        dead = [name for name, process in running.items() if process.poll() is not None]
        say(f"{', '.join(dead)} stopped; stopping the rest")
    except KeyboardInterrupt:
        pass
    finally:
        for process in running.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in running.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


def test(arguments: list[str]) -> int:
    """Run the test suite with pytest; returns its exit code."""
    return subprocess.run([str(PYTHON), "-m", "pytest", *arguments], cwd=ROOT).returncode


def main() -> None:
    command, *rest = sys.argv[1:] or ["run"]
    if command not in {"run", "test", "install"}:
        sys.exit(__doc__)
    ensure_environment()
    if command == "run":
        run()
    elif command == "test":
        sys.exit(test(rest))


if __name__ == "__main__":
    main()
