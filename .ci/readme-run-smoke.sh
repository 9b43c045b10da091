#!/usr/bin/env bash
# Clone the checkout, run the README's first command in it as a new user would, and wait for the
# login page on http://127.0.0.1:8000. Everything it started is stopped afterwards.
set -euo pipefail
clone=$(mktemp -d /tmp/modeldeck-readme-XXXXXX)
git clone -q "$(pwd)" "$clone"
command=$(grep -m1 -oE '^python3 dev\.py run' README.md)
[ -n "$command" ] || { echo "README does not open with 'python3 dev.py run'"; exit 1; }
cleanup() {
  [ -n "${pid:-}" ] && kill -INT -- "-$pid" 2>/dev/null || true
  sleep 5
  [ -n "${pid:-}" ] && kill -KILL -- "-$pid" 2>/dev/null || true
  # Serving processes run detached from the worker; they all live under the clone's folder.
  pkill -f "$clone" 2>/dev/null || true
}
trap cleanup EXIT
(cd "$clone" && exec setsid $command >"$clone/run.log" 2>&1) &
pid=$!
for _ in $(seq 1 600); do
  if curl -fsS http://127.0.0.1:8000/accounts/login/ 2>/dev/null | grep -q "<h1>Sign in</h1>"; then
    echo "login page is up on port 8000"
    grep -E "Demo admin created|Sign in as" "$clone/run.log" || { echo "no admin password printed"; exit 1; }
    exit 0
  fi
  kill -0 "$pid" 2>/dev/null || break
  sleep 1
done
echo "the README's run command did not serve the login page; its output:"
tail -60 "$clone/run.log"
exit 1
