#!/usr/bin/env bash
# Make sure a compose command is here for make up and tests/test_compose.py:
# Docker's compose plugin or docker-compose; where neither is, install Debian's
# docker-compose (as root, about 15 s). Prints nothing when one is there.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=../src/earshot/testing/docker/lib.sh
. "$here/src/earshot/testing/docker/lib.sh"

if docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1; then
    exit 0
fi
[ "$(id -u)" -eq 0 ] || die "no docker compose and no docker-compose; installing one needs root: install either and retry"
command -v apt-get >/dev/null 2>&1 || die "no docker compose, no docker-compose and no apt-get to install it; install either and retry"
say "installing Debian's docker-compose (about 15 s)"
apt_install docker-compose
