# Shared by the scripts in this folder: messages and a quiet apt-get install.

say() { echo "==> $*" >&2; }
die() { echo "error: $*" >&2; exit 1; }

apt_install() {  # quiet unless it fails; then the end of apt's output
    local log
    log=$(mktemp)
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"; } \
        >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        rm -f "$log"
        die "apt-get install $* failed (output above)"
    fi
    rm -f "$log"
}
