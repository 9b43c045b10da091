"""The runtime is a standalone distribution: no Django, its own wheel, its own commands."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import modeldeck_runtime

RUNTIME = Path(__file__).resolve().parents[2] / "runtime"
PACKAGE = RUNTIME / "modeldeck_runtime"


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every module a source file imports."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module.split(".")[0])
    return modules


def test_no_runtime_module_imports_django():
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) >= 8
    offenders = [
        str(path.relative_to(RUNTIME))
        for path in sources
        if {"django", "rest_framework"} & imported_modules(path)
    ]
    assert offenders == []


def test_importing_every_module_loads_no_django():
    modules = [f"modeldeck_runtime.{path.stem}" for path in PACKAGE.glob("*.py")]
    modules = [name for name in modules if not name.endswith("__main__")]
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] == 'django'))\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert output.strip() == "[]"


def test_installed_package_is_the_source_tree():
    assert Path(modeldeck_runtime.__file__).resolve().parent == PACKAGE


def test_wheel_builds_with_both_commands(tmp_path):
    # Build from a clean copy: pip builds local projects in place and would leave build/ behind.
    source = tmp_path / "source"
    shutil.copytree(
        RUNTIME, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    )
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "--wheel-dir",
            str(wheels),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("modeldeck_runtime-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(name for name in names if name.endswith("entry_points.txt"))
        scripts = archive.read(entry_points).decode()
        metadata = archive.read(next(name for name in names if name.endswith("METADATA"))).decode()
    assert "modeldeck_runtime/server.py" in names
    assert "modeldeck_runtime/gateway.py" in names
    assert not any(name.startswith("tests/") for name in names)
    assert "modeldeck-serve = modeldeck_runtime.cli:serve_main" in scripts
    assert "modeldeck-gateway = modeldeck_runtime.cli:gateway_main" in scripts
    assert "Name: modeldeck-runtime" in metadata
    assert "requires-dist: django" not in metadata.lower()
    assert "Requires-Dist: onnxruntime" in metadata
