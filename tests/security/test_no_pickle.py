"""Pickles run code when loaded: nothing in Modeldeck may load one, ever."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCANNED = [
    "config",
    "common",
    "accounts",
    "registry",
    "deployments",
    "monitoring",
    "runtime",
    "bench",
    "dev.py",
    "manage.py",
]
FORBIDDEN = re.compile(
    r"^\s*(import|from)\s+(pickle|cPickle|_pickle|dill|joblib|cloudpickle|shelve)\b"
    r"|\b(pickle|joblib|cloudpickle|dill)\.(loads?|Unpickler)\b"
    r"|\btorch\.load\b"
    r"|\bnumpy\.load\([^)]*allow_pickle\s*=\s*True|\bnp\.load\([^)]*allow_pickle\s*=\s*True",
    re.MULTILINE,
)


def python_files():
    for name in SCANNED:
        path = ROOT / name
        if path.is_file():
            yield path
        elif path.is_dir():
            yield from (p for p in path.rglob("*.py") if ".venv" not in p.parts)


def test_the_scan_covers_the_code():
    files = list(python_files())
    assert len(files) > 30
    assert ROOT / "accounts" / "models.py" in files


def test_no_code_loads_pickles():
    offenders = []
    for path in python_files():
        for match in FORBIDDEN.finditer(path.read_text(encoding="utf-8")):
            line = path.read_text(encoding="utf-8")[: match.start()].count("\n") + 1
            offenders.append(f"{path.relative_to(ROOT)}:{line}: {match.group(0).strip()}")
    assert offenders == []


def test_the_pattern_catches_what_it_should():
    for sample in [
        "import pickle",
        "from joblib import load",
        "x = torch.load(f)",
        "import cloudpickle",
        "pickle.loads(b)",
        "np.load(f, allow_pickle=True)",
    ]:
        assert FORBIDDEN.search(sample), sample
    for sample in ["json.loads(x)", "onnx.load(path)", "np.load(f)"]:
        assert not FORBIDDEN.search(sample), sample
