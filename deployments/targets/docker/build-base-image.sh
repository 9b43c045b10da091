#!/usr/bin/env bash
# Builds the local base image of every serving image (default modeldeck/base:bookworm) without
# pulling from any registry: debootstrap a minimal Debian bookworm with Python 3.11 from the
# Debian mirror apt already uses, apply security updates, slim it, and `docker import` it.
#
# Usage: deployments/targets/docker/build-base-image.sh [IMAGE]
# Env:   MODELDECK_DEBIAN_MIRROR, MODELDECK_DEBIAN_SECURITY_MIRROR (default: what apt uses here),
#        MODELDECK_CACHE_DIR (default /var/cache/modeldeck) keeps the root filesystem tarball, so
#        re-creating the image after `docker rmi` or an engine reset takes seconds.
set -euo pipefail

IMAGE=${1:-modeldeck/base:bookworm}
SUITE=bookworm
CACHE_DIR=${MODELDECK_CACHE_DIR:-/var/cache/modeldeck}
TARBALL="$CACHE_DIR/base-$SUITE.tar"
# Bump when the package set or the slimming below changes, so a stale tarball is not reused.
RECIPE=3

log() { echo "[base-image] $*" >&2; }

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    log "$IMAGE is present"
    exit 0
fi

import_tarball() {
    docker import \
        --change 'ENV LANG=C.UTF-8' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["/bin/bash"]' \
        --change "LABEL org.opencontainers.image.title=modeldeck-base org.opencontainers.image.version=$SUITE-r$RECIPE" \
        --message "modeldeck base image ($SUITE, recipe $RECIPE)" \
        "$TARBALL" "$IMAGE" >/dev/null
    log "imported $IMAGE from $TARBALL"
}

if [[ -f "$TARBALL" && -f "$TARBALL.recipe" && "$(cat "$TARBALL.recipe")" == "$RECIPE" ]]; then
    import_tarball
    exit 0
fi

# The mirrors apt uses on this machine (the only Debian source reachable here).
apt_site() {
    apt-get indextargets --format '$(SITE) $(RELEASE)' 'Created-By: Packages' 2>/dev/null \
        | awk -v release="$1" '$2 == release { print $1; exit }'
}
MIRROR=${MODELDECK_DEBIAN_MIRROR:-$(apt_site "$SUITE")}
SECURITY_MIRROR=${MODELDECK_DEBIAN_SECURITY_MIRROR:-$(apt_site "$SUITE-security")}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${SECURITY_MIRROR:-http://deb.debian.org/debian-security}

command -v debootstrap >/dev/null || { log "debootstrap is not installed"; exit 1; }

ROOTFS=$(mktemp -d /tmp/modeldeck-rootfs.XXXXXX)
cleanup() {
    umount "$ROOTFS/proc" 2>/dev/null || true
    rm -rf --one-file-system "$ROOTFS"
}
trap cleanup EXIT

log "debootstrap $SUITE from $MIRROR"
debootstrap --variant=minbase --include=python3,python3-venv \
    "$SUITE" "$ROOTFS" "$MIRROR" >"$ROOTFS.debootstrap.log" 2>&1 || {
    tail -n 40 "$ROOTFS.debootstrap.log" >&2
    log "debootstrap failed"
    exit 1
}
rm -f "$ROOTFS.debootstrap.log"

# Security updates, while the chroot still has the host's network and resolver.
cat >"$ROOTFS/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
EOF
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
mount -t proc proc "$ROOTFS/proc"
log "applying $SUITE updates"
chroot "$ROOTFS" /usr/bin/env DEBIAN_FRONTEND=noninteractive \
    sh -c 'apt-get -qq -o APT::Sandbox::User=root update \
        && apt-get -qq -o APT::Sandbox::User=root -y upgrade && apt-get -qq clean' \
    >"$ROOTFS.upgrade.log" 2>&1 || {
    tail -n 40 "$ROOTFS.upgrade.log" >&2
    log "applying updates failed"
    exit 1
}
rm -f "$ROOTFS.upgrade.log"
umount "$ROOTFS/proc"

# The unprivileged user serving containers run as (the driver also sets the numeric uid).
chroot "$ROOTFS" groupadd --gid 10001 modeldeck
chroot "$ROOTFS" useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin modeldeck

# Slim: documentation, locales, caches and apt lists are never used at run time.
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/* "$ROOTFS"/var/cache/debconf/*-old \
    "$ROOTFS"/var/log/* "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* \
    "$ROOTFS"/usr/share/info/* "$ROOTFS"/usr/share/locale/* "$ROOTFS"/tmp/* \
    "$ROOTFS"/etc/resolv.conf "$ROOTFS"/etc/hostname
: >"$ROOTFS/etc/resolv.conf"

mkdir -p "$CACHE_DIR"
tar -C "$ROOTFS" --numeric-owner --xattrs -cf "$TARBALL.tmp" .
mv "$TARBALL.tmp" "$TARBALL"
echo "$RECIPE" >"$TARBALL.recipe"
import_tarball
