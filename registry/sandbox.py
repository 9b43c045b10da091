"""Registry work that runs in a fresh, limited Python process (validation, optimization, batch
scoring): the bare environment such a child gets, and how it is started, bounded in time and
read back. No Django here: the children import this module too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from modeldeck_runtime.protocol import DATATYPE_TO_NUMPY_NAME

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The most a child's answer (stdout) or error tail (stderr) may be.
OUTPUT_CAP = 1024 * 1024

# numpy dtype names of the Open Inference Protocol datatypes that have one.
NUMPY_DTYPES = {
    datatype: name for datatype, name in DATATYPE_TO_NUMPY_NAME.items() if datatype != "BYTES"
}


def child_environment() -> dict[str, str]:
    """Only what the child needs: nothing of the worker's secrets or settings leaks into it, and
    the numeric libraries use one thread each."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(PROJECT_ROOT),
        "LANG": "C.UTF-8",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def child_command(module: str, *arguments: str) -> list[str]:
    """`python -m module arguments…` with this interpreter."""
    return [sys.executable, "-m", module, *arguments]


@dataclass(frozen=True)
class ChildResult:
    """How a child ended: `returncode` is None when it ran out of time (and was killed)."""

    returncode: int | None
    stdout: bytes
    stderr_tail: bytes

    @property
    def timed_out(self) -> bool:
        return self.returncode is None


def run_child(module: str, *arguments: str, timeout_seconds: float) -> ChildResult:
    """Run `python -m module` in its own session, wait at most `timeout_seconds`, and return
    the first OUTPUT_CAP bytes of its stdout and the last OUTPUT_CAP of its stderr."""
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(
            child_command(module, *arguments),
            stdout=stdout,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            cwd=PROJECT_ROOT,
            env=child_environment(),
            start_new_session=True,
        )
        try:
            returncode: int | None = process.wait(timeout=timeout_seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            returncode = None
        stdout.seek(0)
        stderr.seek(0)
        return ChildResult(returncode, stdout.read(OUTPUT_CAP), stderr.read()[-OUTPUT_CAP:])
