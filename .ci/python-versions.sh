#!/usr/bin/env bash
# The suite's fast tier (no docker, browser, slow or fault tests) on every Python 3.12.x and
# 3.13.x that pyenv has on this machine, each in its own venv under var/python-versions/
# (the full suite runs on the default Python through `dev.py test`). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
shopt -s nullglob
pythons=(/root/.pyenv/versions/3.12.* /root/.pyenv/versions/3.13.*)
if [ ${#pythons[@]} -eq 0 ]; then
  echo "no Python 3.12 or 3.13 under /root/.pyenv/versions; nothing to do"
  exit 0
fi
failed=()
for prefix in "${pythons[@]}"; do
  version=$(basename "$prefix")
  venv="var/python-versions/$version"
  echo "==> Python $version: venv $venv"
  if [ ! -x "$venv/bin/python" ]; then
    "$prefix/bin/python3" -m venv "$venv"
  fi
  "$venv/bin/python" -m pip install --disable-pip-version-check --quiet --upgrade pip
  "$venv/bin/python" -m pip install --disable-pip-version-check --quiet -e ".[dev]" -e runtime -e client
  echo "==> Python $version: the fast tier"
  if ! MODELDECK_REQUIRE_TIERS="" "$venv/bin/python" -m pytest -q -p no:cacheprovider \
      -m "not docker and not browser and not slow and not fault" "$@"; then
    failed+=("$version")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "the fast tier failed on Python ${failed[*]}"
  exit 1
fi
echo "the fast tier passed on: $(for p in "${pythons[@]}"; do basename "$p"; done | tr '\n' ' ')"
