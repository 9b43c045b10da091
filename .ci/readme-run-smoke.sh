#!/usr/bin/env bash
# Run every command of the README and of the start-up banner verbatim in a fresh clone (see the
# comment at the top of README.md and .ci/readme_commands.py): first run, sign-in with the
# printed password, ops commands, `dev.py stop`, a clean second run and Ctrl-C. The port is
# MODELDECK_PORT (default 8000); nothing the clone started is left running.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 .ci/readme_commands.py "$@"
