#!/usr/bin/env bash
# Fail when a package installed in .venv has a published advisory (pip-audit against PyPI's
# vulnerability data). Run from the checkout: bash .ci/audit.sh
#
# Where PyPI's per-release JSON cannot be reached, pip-audit can look nothing up: the script then
# says so and exits 0, or 2 when MODELDECK_REQUIRE_AUDIT=true (set it where the data is reachable,
# so that an outage is not mistaken for a clean result).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${MODELDECK_VENV:-.venv}

# Advisories accepted on purpose, each with the reason; only ones with no fixed release belong
# here, and each line is removed as soon as a fix ships. Format: "ID  reason".
IGNORED=(
)

ignore_args=()
for entry in "${IGNORED[@]}"; do
  ignore_args+=(--ignore-vuln "${entry%% *}")
done

report=$(mktemp)
trap 'rm -f "$report"' EXIT
set +e
"$venv/bin/pip-audit" --skip-editable --progress-spinner off --format json --output "$report" \
  "${ignore_args[@]}" 2>"$report.err"
audit_status=$?
set -e
if [ ! -s "$report" ]; then
  echo "audit: pip-audit produced no report (exit $audit_status):"
  cat "$report.err"
  rm -f "$report.err"
  exit 2
fi
rm -f "$report.err"

"$venv/bin/python" - "$report" "${MODELDECK_REQUIRE_AUDIT:-false}" <<'PY'
import json
import sys

report, require = json.load(open(sys.argv[1])), sys.argv[2].lower() in {"1", "true", "yes"}
dependencies = report.get("dependencies", [])
audited = [d for d in dependencies if "skip_reason" not in d]
vulnerable = [d for d in audited if d.get("vulns")]
for dependency in vulnerable:
    for vuln in dependency["vulns"]:
        fixed = ", ".join(vuln.get("fix_versions") or []) or "no fixed release"
        print(f"audit: {dependency['name']} {dependency['version']}: {vuln['id']} (fixed in {fixed})")
print(
    f"audit: {len(audited)} of {len(dependencies)} installed packages looked up, "
    f"{len(vulnerable)} with a known advisory"
)
if vulnerable:
    sys.exit(1)
if dependencies and not audited:
    print("audit: no advisory data could be reached (PyPI's per-release JSON); nothing was checked")
    sys.exit(2 if require else 0)
PY
