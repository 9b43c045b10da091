"""Prepare the wheelhouse that serving images are built from while `docker build` has no network.

    python deployments/targets/docker/prepare_wheelhouse.py \
        [--runtime runtime] [--output var/wheelhouse]

Layout (what deployments/targets/docker/images.py copies into a build context):

    <output>/deps/*.whl        every dependency wheel of the runtime, CPython 3.11 manylinux x86_64
    <output>/runtime/*.whl     the modeldeck-runtime wheel built from runtime/

Idempotent and cache-friendly: dependency wheels are downloaded again only when the runtime's
requirements change, and the runtime wheel file is replaced only when its contents change, so the
image layers built from an unchanged wheelhouse stay cached. Needs PyPI (pip's ordinary client);
nothing Django. Exits non-zero with pip's output when something cannot be had.
"""

import argparse
import fnmatch
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

PYTHON_VERSION = "3.11"
ABI = "cp311"
# Bookworm has glibc 2.36: every manylinux tag up to that is installable in the base image.
PLATFORMS = [
    *(f"manylinux_2_{minor}_x86_64" for minor in range(36, 16, -1)),
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
]
# Fixed zip timestamps make the runtime wheel byte-identical when its sources are unchanged.
SOURCE_DATE_EPOCH = "315532800"
STAMP_NAME = ".requirements.sha256"
SOURCE_STAMP_NAME = ".source.sha256"
IGNORED = ("build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "tests")


def log(message: str) -> None:
    print(f"[wheelhouse] {message}", file=sys.stderr, flush=True)


def run_pip(*arguments: str, env: dict | None = None) -> None:
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", *arguments]
    completed = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if completed.returncode != 0:
        sys.stderr.write(completed.stdout[-4000:] + completed.stderr[-4000:])
        raise SystemExit(f"pip failed: {' '.join(arguments[:2])} …")


def platform_arguments() -> list[str]:
    arguments = [
        "--only-binary=:all:",
        "--python-version",
        PYTHON_VERSION,
        "--implementation",
        "cp",
        "--abi",
        ABI,
    ]
    for platform in PLATFORMS:
        arguments += ["--platform", platform]
    return arguments


def runtime_requirements(runtime: Path) -> list[str]:
    project = tomllib.loads((runtime / "pyproject.toml").read_text())["project"]
    return list(project.get("dependencies", []))


def prepare_dependencies(runtime: Path, output: Path) -> bool:
    """Download the dependency wheels unless the requirements are unchanged; True if downloaded."""
    requirements = runtime_requirements(runtime)
    stamp = hashlib.sha256(json.dumps([requirements, PLATFORMS, ABI]).encode()).hexdigest()
    deps = output / "deps"
    stamp_file = deps / STAMP_NAME
    if stamp_file.exists() and stamp_file.read_text() == stamp and any(deps.glob("*.whl")):
        log(f"dependency wheels are current ({len(list(deps.glob('*.whl')))} wheels)")
        return False
    output.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".deps-", dir=output))
    staging.chmod(0o755)
    try:
        log(f"downloading dependency wheels for {len(requirements)} requirements")
        run_pip("download", "--dest", str(staging), *platform_arguments(), *requirements)
        (staging / STAMP_NAME).write_text(stamp)
        if deps.exists():
            shutil.rmtree(deps)
        staging.rename(deps)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"{len(list(deps.glob('*.whl')))} dependency wheels in {deps}")
    return True


def wheel_contents(path: Path) -> str:
    """A digest of what a wheel installs, blind to zip metadata."""
    digest = hashlib.sha256()
    with zipfile.ZipFile(path) as archive:
        for name in sorted(archive.namelist()):
            digest.update(name.encode() + b"\0" + archive.read(name) + b"\0")
    return digest.hexdigest()


def source_digest(runtime: Path) -> str:
    """A digest of the runtime's sources as the wheel build sees them."""
    digest = hashlib.sha256()
    for path in sorted(runtime.rglob("*")):
        relative = path.relative_to(runtime)
        ignored = any(
            fnmatch.fnmatch(part, pattern) for part in relative.parts for pattern in IGNORED
        )
        if path.is_dir() or ignored or path.suffix == ".pyc":
            continue
        digest.update(str(relative).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def prepare_runtime_wheel(runtime: Path, output: Path) -> bool:
    """Build the runtime wheel unless its sources are unchanged; True when the wheel changed."""
    target = output / "runtime"
    target.mkdir(parents=True, exist_ok=True)
    stamp_file = target / SOURCE_STAMP_NAME
    sources = source_digest(runtime)
    if (
        stamp_file.exists()
        and stamp_file.read_text() == sources
        and len(list(target.glob("*.whl"))) == 1
    ):
        log(f"runtime wheel is current ({next(target.glob('*.whl')).name})")
        return False
    with tempfile.TemporaryDirectory(prefix="modeldeck-runtime-") as scratch:
        # Build from a copy so setuptools' build/ and egg-info never land in the source tree.
        source = Path(scratch) / "src"
        shutil.copytree(
            runtime,
            source,
            ignore=shutil.ignore_patterns(*IGNORED),
        )
        built = Path(scratch) / "out"
        env = {**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH}
        run_pip("wheel", "--no-deps", "--wheel-dir", str(built), str(source), env=env)
        (new_wheel,) = built.glob("*.whl")
        existing = list(target.glob("*.whl"))
        if (
            len(existing) == 1
            and existing[0].name == new_wheel.name
            and wheel_contents(existing[0]) == wheel_contents(new_wheel)
        ):
            log(f"runtime wheel is unchanged ({new_wheel.name})")
            stamp_file.write_text(sources)
            return False
        for old in existing:
            old.unlink()
        shutil.copyfile(new_wheel, target / new_wheel.name)
        stamp_file.write_text(sources)
        log(f"runtime wheel updated: {new_wheel.name}")
        return True


def check_resolvable(output: Path) -> None:
    """Prove the image's offline install will succeed: the runtime resolves from deps alone."""
    (runtime_wheel,) = (output / "runtime").glob("*.whl")
    with tempfile.TemporaryDirectory(prefix="modeldeck-resolve-") as scratch:
        run_pip(
            "install",
            "--dry-run",
            "--ignore-installed",
            "--no-index",
            "--find-links",
            str(output / "deps"),
            "--target",
            scratch,
            *platform_arguments(),
            str(runtime_wheel),
        )
    log("runtime resolves offline from the wheelhouse")


def main() -> None:
    root = Path(__file__).resolve().parents[3]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", type=Path, default=root / "runtime")
    parser.add_argument("--output", type=Path, default=root / "var" / "wheelhouse")
    arguments = parser.parse_args()
    runtime, output = arguments.runtime.resolve(), arguments.output.resolve()
    if not (runtime / "pyproject.toml").exists():
        raise SystemExit(f"no runtime package at {runtime}")
    dependencies_changed = prepare_dependencies(runtime, output)
    runtime_changed = prepare_runtime_wheel(runtime, output)
    if dependencies_changed or runtime_changed:
        check_resolvable(output)


if __name__ == "__main__":
    main()
