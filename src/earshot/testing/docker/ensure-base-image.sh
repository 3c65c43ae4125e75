#!/usr/bin/env bash
# Print the name of a usable base image for Dockerfile.server (on stdout; all
# progress goes to stderr). In order: the public image if present; the public
# image if it can be pulled; a local one built from Debian's packages with
# debootstrap (no container registry needed), carrying this host's CA bundle
# so pip inside the image build works behind TLS interception.
#
# usage: ensure-base-image.sh [PUBLIC_IMAGE] [LOCAL_IMAGE]
set -euo pipefail

PUBLIC=${1:-python:3.11-slim-bookworm}
LOCAL=${2:-earshot-base:bookworm}
SUITE=bookworm
PULL_TIMEOUT=${EARSHOT_PULL_TIMEOUT:-30}

# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
have() { docker image inspect "$1" >/dev/null 2>&1; }

for image in "$PUBLIC" "$LOCAL"; do
    if have "$image"; then
        echo "$image"
        exit 0
    fi
done

say "trying to pull $PUBLIC (at most ${PULL_TIMEOUT} s)"
if timeout "$PULL_TIMEOUT" docker pull -q "$PUBLIC" >/dev/null 2>&1; then
    echo "$PUBLIC"
    exit 0
fi

say "no registry: building $LOCAL from Debian's packages (about 60 s)"
[ "$(id -u)" -eq 0 ] || die "building the base image needs root (debootstrap)"
if ! command -v debootstrap >/dev/null 2>&1; then
    say "installing debootstrap"
    apt_install debootstrap
fi

# The host's own Debian mirror: whatever apt here already reaches.
mirror=$(grep -h -m1 '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | head -n1 || true)
if [ -z "$mirror" ]; then
    mirror=$(grep -h -m1 '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | head -n1 || true)
fi
[ -n "$mirror" ] || die "no Debian mirror found in this host's apt sources"

rootfs=$(mktemp -d /tmp/earshot-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
say "debootstrap $SUITE (minbase + python3) into $rootfs"
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    "$SUITE" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || {
    tail -n 20 "$rootfs.log" >&2; die "debootstrap failed (log above)"; }
rm -f "$rootfs.log"

bundle=/etc/ssl/certs/ca-certificates.crt
if [ -f "$bundle" ]; then
    say "adding this host's CA bundle to the image"
    cp "$bundle" "$rootfs/etc/ssl/certs/ca-certificates.crt"
fi
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*

say "importing $LOCAL"
tar -C "$rootfs" -c . | docker import \
    --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'LABEL org.earshot.role=base' \
    - "$LOCAL" >/dev/null
echo "$LOCAL"
