#!/usr/bin/env bash
# Make sure a Docker engine answers. Does nothing where `docker info` works.
# Otherwise, as root: install Debian's engine if it is missing, start it in the
# background and wait (bounded) until it answers. Logs go to /var/log/dockerd.log.
set -euo pipefail

# shellcheck source=lib.sh
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

# Processes of a killed engine can linger as zombies (not every init reaps
# them): count only live ones.
alive() {  # alive PID...
    local pid state
    for pid in "$@"; do
        state=$(awk '/^State:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
        if [ -n "$state" ] && [ "$state" != Z ]; then
            return 0
        fi
    done
    return 1
}
dockerd_alive() { alive $(pgrep -x dockerd || true); }

CONTAINERD_TOML=/var/run/docker/containerd/containerd.toml
CONTAINERD_PID=/var/run/docker/containerd/containerd.pid

if ! dockerd_alive; then
    # A hard stop leaves pid files behind, and dockerd then refuses to start
    # (its own), or waits for a containerd that is gone (containerd's).
    for pidfile in /var/run/docker.pid "$CONTAINERD_PID"; do
        if [ -f "$pidfile" ] && ! alive "$(cat "$pidfile" 2>/dev/null)"; then
            say "removing the stale $pidfile"
            rm -f "$pidfile"
        fi
    done
    # A containerd that a killed engine left running would block the new one.
    orphans=$(pgrep -f "$CONTAINERD_TOML" || true)
    if alive $orphans; then
        say "stopping the containerd a killed engine left behind"
        kill $orphans 2>/dev/null || true
        for _ in $(seq 1 50); do
            alive $(pgrep -f "$CONTAINERD_TOML" || true) || break
            sleep 0.2  # polling for the orphan to exit, bounded above
        done
        pkill -9 -f "$CONTAINERD_TOML" 2>/dev/null || true
        rm -f "$CONTAINERD_PID"
    fi
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
