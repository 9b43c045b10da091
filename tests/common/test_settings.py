import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = {
    "DEBUG": "false",
    "SECRET_KEY": "x7Hq2-pR9vLm4Zt8Wn3Kc6Yb1Ds5Fg0Jh-QaUeXoIiPlMkNjBvCwEzAyTrSq",
    "ALLOWED_HOSTS": "modeldeck.example.com",
    "SECURE_SSL_REDIRECT": "true",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
    "SECURE_HSTS_PRELOAD": "true",
}


def run_manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    # DJANGO_ALLOW_ASYNC_UNSAFE is the test processes' own (tests/conftest.py), not a deployment's.
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in PRODUCTION and k not in {"DJANGO_SETTINGS_MODULE", "DJANGO_ALLOW_ASYNC_UNSAFE"}
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=120,
    )


def test_check_deploy_is_clean_with_production_values(tmp_path):
    result = run_manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        env={**PRODUCTION, "MODELDECK_VAR_DIR": str(tmp_path)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DEBUG": "false", "SECRET_KEY": ""}, "SECRET_KEY is not set"),
        ({"DEBUG": "true", "SECRET_KEY": ""}, "SECRET_KEY is not set"),
        ({"DEBUG": "maybe"}, "DEBUG='maybe' is not a boolean"),
        ({"DEBUG": "true", "SECRET_KEY": "k", "ALLOWED_HOSTS": "*"}, "never '*'"),
        (
            {"DEBUG": "true", "SECRET_KEY": "k", "API_TOKEN_MAX_DAYS": "lots"},
            "API_TOKEN_MAX_DAYS='lots' is not an integer",
        ),
    ],
)
def test_bad_settings_fail_loudly(tmp_path, env, message):
    result = run_manage("check", env={"MODELDECK_VAR_DIR": str(tmp_path), **env})
    assert result.returncode != 0
    assert message in result.stderr


def test_every_environment_variable_is_listed_in_env_example():
    import re

    example = (ROOT / ".env.example").read_text()
    listed = set(re.findall(r"^([A-Z][A-Z0-9_]+)=", example, re.MULTILINE))
    source = (ROOT / "config/settings/base.py").read_text()
    read = set(re.findall(r'env_(?:str|bool|int|float|list)\("([A-Z0-9_]+)"', source))
    assert read - listed == set()
