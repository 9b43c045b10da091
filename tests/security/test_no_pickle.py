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
    "edge",
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
    r"|\bnumpy\.load\([^)]*allow_pickle\s*=\s*True|\bnp\.load\([^)]*allow_pickle\s*=\s*True"
    r"|\ballow_pickle\s*=\s*True"
    r"|\b(pandas|pd)\.read_pickle\b"
    r"|\bmarshal\.loads?\b"
    r"|\byaml\.(unsafe_load|full_load|load_all)\b"
    r"|\byaml\.load\((?![^)]*Loader\s*=\s*(yaml\.)?C?SafeLoader)[^)]*\)"
    r"|\bLoader\s*=\s*(yaml\.)?(Unsafe|Full)?Loader\b",
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
        "numpy.load(path, allow_pickle=True)",
        "joblib.load(path)",
        "cloudpickle.loads(b)",
        "import dill",
        "pd.read_pickle(path)",
        "marshal.loads(b)",
        "yaml.load(text)",
        "yaml.load(text, Loader=yaml.Loader)",
        "yaml.unsafe_load(text)",
        "yaml.full_load(text)",
        "yaml.load(text, Loader=yaml.UnsafeLoader)",
    ]:
        assert FORBIDDEN.search(sample), sample
    for sample in [
        "json.loads(x)",
        "onnx.load(path)",
        "np.load(f)",
        "np.load(f, allow_pickle=False)",
        "yaml.safe_load(text)",
        "yaml.load(text, Loader=yaml.SafeLoader)",
        "yaml.load(text, Loader=yaml.CSafeLoader)",
    ]:
        assert not FORBIDDEN.search(sample), sample
