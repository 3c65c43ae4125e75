#!/usr/bin/env bash
# Make sure a Docker engine answers. Does nothing where `docker info` works.
# Otherwise, as root: install Debian's engine if it is missing, start it in the
# background and wait (bounded) until it answers. Logs go to /var/log/dockerd.log.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

if docker info >/dev/null 2>&1; then
    exit 0
fi
say "no Docker engine answers; starting one"
[ "$(id -u)" -eq 0 ] || die "the engine is not running and starting it needs root; start Docker yourself and retry"

if ! command -v dockerd >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 || die "no dockerd and no apt-get to install it; install Docker and retry"
    say "installing Debian's docker.io (about 15 s)"
    apt_install docker.io
fi

# A hard stop leaves the pid file behind, and dockerd then refuses to start.
if [ -f /var/run/docker.pid ] && ! pgrep -x dockerd >/dev/null 2>&1; then
    say "removing the stale /var/run/docker.pid"
    rm -f /var/run/docker.pid
fi
if ! pgrep -x dockerd >/dev/null 2>&1; then
    setsid dockerd >/var/log/dockerd.log 2>&1 < /dev/null &
fi

say "waiting for the engine (up to 60 s)"
for _ in $(seq 1 120); do
    if docker info >/dev/null 2>&1; then
        say "engine ready: $(docker version --format '{{.Server.Version}}' 2>/dev/null)"
        exit 0
    fi
    sleep 0.5  # polling the engine's answer, bounded above
done
tail -n 20 /var/log/dockerd.log >&2 || true
die "the Docker engine did not answer within 60 s (log above: /var/log/dockerd.log)"
