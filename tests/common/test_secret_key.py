"""The secret key: dev.py writes a random one once (0600 in a 0700 var/), and the settings of
every process read it from the environment, SECRET_KEY_FILE or var/secret_key, in that order."""

import importlib.util
import os
import stat
import subprocess
import sys
from pathlib import Path

from django.conf import settings

ROOT = Path(settings.BASE_DIR)
PRINT_KEY = "from django.conf import settings; print(settings.SECRET_KEY)"


def load_dev_module():
    spec = importlib.util.spec_from_file_location("dev_under_test", ROOT / "dev.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def settings_key(tmp_path: Path, **variables: str) -> subprocess.CompletedProcess:
    """SECRET_KEY as a fresh process with the base settings (DEBUG off) sees it."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"SECRET_KEY", "SECRET_KEY_FILE", "DEBUG"}
    }
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.base", MODELDECK_VAR_DIR=str(tmp_path / "var")
    )
    env.update(variables)
    return subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {PRINT_KEY}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_dev_writes_one_random_private_key_and_keeps_it(tmp_path, monkeypatch):
    dev = load_dev_module()
    monkeypatch.setattr(dev, "VAR", tmp_path / "var")
    monkeypatch.setattr(dev, "SECRET_KEY_FILE", tmp_path / "var" / "secret_key")
    dev.ensure_secret_key()
    first = (tmp_path / "var" / "secret_key").read_text().strip()
    dev.ensure_secret_key()
    assert (tmp_path / "var" / "secret_key").read_text().strip() == first
    assert len(first) >= 50
    assert stat.S_IMODE((tmp_path / "var").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "var" / "secret_key").stat().st_mode) == 0o600

    other = tmp_path / "other"
    monkeypatch.setattr(dev, "VAR", other)
    monkeypatch.setattr(dev, "SECRET_KEY_FILE", other / "secret_key")
    dev.ensure_secret_key()
    assert (other / "secret_key").read_text().strip() != first


def test_settings_read_the_key_from_var_then_the_file_then_the_environment(tmp_path):
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "secret_key").write_text("key-from-var\n")
    (tmp_path / "elsewhere").write_text("key-from-file\n")

    assert settings_key(tmp_path).stdout.strip() == "key-from-var"
    named = settings_key(tmp_path, SECRET_KEY_FILE=str(tmp_path / "elsewhere"))
    assert named.stdout.strip() == "key-from-file"
    given = settings_key(tmp_path, SECRET_KEY="key-from-env", SECRET_KEY_FILE="/nonexistent")
    assert given.stdout.strip() == "key-from-env"


def test_without_any_key_the_settings_refuse_and_say_how_to_get_one(tmp_path):
    result = settings_key(tmp_path, DEBUG="true")
    assert result.returncode != 0
    assert "python3 dev.py run" in result.stderr
    assert "SECRET_KEY_FILE" in result.stderr
    missing = settings_key(tmp_path, SECRET_KEY_FILE=str(tmp_path / "missing"))
    assert "cannot be read" in missing.stderr


def test_dev_accepts_python_311_to_313():
    dev = load_dev_module()
    assert [dev.python_is_supported(v) for v in [(3, 10), (3, 11), (3, 12), (3, 13)]] == [
        False,
        True,
        True,
        True,
    ]
