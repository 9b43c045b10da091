#!/usr/bin/env bash
# The CI Docker tier's machine: a running Docker engine, the local base image and the wheelhouse
# that serving images are built from with networking off. Idempotent: a second run only checks.
# Exits non-zero when the engine cannot be had, so the Docker tests fail instead of skipping.
#
# Env: MODELDECK_BASE_IMAGE (modeldeck/base:bookworm), MODELDECK_WHEELHOUSE (var/wheelhouse),
#      MODELDECK_DOCKERD_LOG (/tmp/modeldeck-dockerd.log), MODELDECK_CACHE_DIR (/var/cache/modeldeck).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
BASE_IMAGE=${MODELDECK_BASE_IMAGE:-modeldeck/base:bookworm}
WHEELHOUSE=${MODELDECK_WHEELHOUSE:-$ROOT/var/wheelhouse}
DOCKERD_LOG=${MODELDECK_DOCKERD_LOG:-/tmp/modeldeck-dockerd.log}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
[[ -x "$PYTHON" ]] || PYTHON=python3
STARTED=$SECONDS

log() { echo "[docker-tier +$((SECONDS - STARTED))s] $*" >&2; }
die() { log "FAILED: $*"; exit 1; }

install_packages() {
    local missing=()
    command -v dockerd >/dev/null || missing+=(docker.io)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    # A throwaway local registry for the push-and-pull-by-digest test.
    command -v docker-registry >/dev/null || missing+=(docker-registry)
    ((${#missing[@]})) || return 0
    log "installing ${missing[*]}"
    # Keep the package's init script from starting its own daemon; we start ours below.
    local policy=/usr/sbin/policy-rc.d added_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && added_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    { apt-get -o DPkg::Lock::Timeout=600 update -qq && apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}"; } \
        >/tmp/modeldeck-apt.log 2>&1 || { tail -n 30 /tmp/modeldeck-apt.log >&2; die "apt-get install ${missing[*]}"; }
    if ((added_policy)); then rm -f "$policy"; fi
    command -v dockerd >/dev/null || die "dockerd is still missing after installing docker.io"
}

engine_ready() { timeout 10 docker info >/dev/null 2>&1; }

start_engine() {
    if engine_ready; then
        log "Docker engine is running ($(docker version --format '{{.Server.Version}}'))"
        return 0
    fi
    [[ -S /var/run/docker.sock ]] && ! pgrep -x dockerd >/dev/null && rm -f /var/run/docker.sock
    log "starting dockerd (log: $DOCKERD_LOG)"
    # setsid: the daemon outlives this script and its CI step, like a system service would.
    setsid nohup dockerd --host unix:///var/run/docker.sock --log-level warn \
        >>"$DOCKERD_LOG" 2>&1 </dev/null &
    local deadline=$((SECONDS + 90))
    until engine_ready; do
        if ((SECONDS > deadline)) || ! pgrep -x dockerd >/dev/null; then
            tail -n 40 "$DOCKERD_LOG" >&2 || true
            die "the Docker engine did not start"
        fi
        sleep 1
    done
    log "Docker engine is up ($(docker version --format '{{.Server.Version}}'))"
}

install_packages
start_engine
log "base image $BASE_IMAGE"
bash deployments/targets/docker/build-base-image.sh "$BASE_IMAGE" || die "building $BASE_IMAGE"
log "wheelhouse $WHEELHOUSE"
"$PYTHON" deployments/targets/docker/prepare_wheelhouse.py --runtime runtime --output "$WHEELHOUSE" \
    || die "preparing the wheelhouse"
log "ready: engine, $BASE_IMAGE ($(docker image inspect --format '{{.Size}}' "$BASE_IMAGE" | awk '{printf "%.0f MB", $1/1e6}')), $WHEELHOUSE"
