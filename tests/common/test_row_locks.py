"""On PostgreSQL, SELECT … FOR UPDATE over a join locks the rows of every joined table: a
service that locks one device but joins its target also locks the target, and deadlocks with
any transaction that inserts a row referring to that target (a foreign-key check takes a share
lock on it). Every select_for_update() whose query joins with select_related must therefore say
which rows it locks, with of=("self",) or an explicit list."""

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ["accounts", "common", "registry", "deployments", "edge", "monitoring"]


def _calls(node: ast.AST):
    """The chain of method names of a call expression like a.b().c().d()."""
    names = []
    while isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        names.append((node.func.attr, node))
        node = node.func.value
    return names


def offending_locks() -> list[str]:
    found = []
    for package in PRODUCT:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                chain = _calls(node)
                names = [name for name, _ in chain]
                if "select_for_update" not in names or "select_related" not in names:
                    continue
                lock = next(call for name, call in chain if name == "select_for_update")
                if not any(keyword.arg == "of" for keyword in lock.keywords):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return sorted(set(found))


def test_every_lock_over_a_join_names_the_rows_it_locks():
    assert offending_locks() == []


def test_the_check_sees_a_lock_over_a_join(tmp_path, monkeypatch):
    # The same walk on a file with the mistake finds it (so the test above can fail).
    package = tmp_path / "accounts"
    package.mkdir()
    (package / "bad.py").write_text(
        "def f(Model):\n"
        "    return Model.objects.select_for_update().select_related('team').get(pk=1)\n"
    )
    module = sys.modules[__name__]
    monkeypatch.setattr(module, "ROOT", tmp_path)
    monkeypatch.setattr(module, "PRODUCT", ["accounts"])
    assert offending_locks() == ["accounts/bad.py:2"]
