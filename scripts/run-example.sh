#!/usr/bin/env bash
# Run examples/whisperlive-client as another project would: in a fresh virtual
# environment outside this checkout, with earshot installed from its wheel
# (not from the checkout) and WhisperLive 0.10's client from the registry.
# The environment is removed afterwards, whatever happened.
#
# usage: scripts/run-example.sh [PYTHON] [-- PYTEST ARGS...]
#   PYTHON builds the wheel (default: .venv/bin/python); python3 makes the venv.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
builder=${1:-$here/.venv/bin/python}
shift || true
[ "${1:-}" = "--" ] && shift
example=$here/examples/whisperlive-client

# shellcheck source=../src/earshot/testing/docker/lib.sh
. "$here/src/earshot/testing/docker/lib.sh"

# PyAudio (which whisper_live.client imports) compiles against PortAudio.
if ! dpkg -s portaudio19-dev >/dev/null 2>&1; then
    [ "$(id -u)" -eq 0 ] || die "PyAudio needs Debian's portaudio19-dev: apt-get install portaudio19-dev"
    say "installing portaudio19-dev (PyAudio builds against it)"
    apt_install portaudio19-dev
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/earshot-example.XXXXXX")
trap 'rm -rf "$work"' EXIT

say "building earshot's wheel"
# From a copy of what the wheel is made of: setuptools builds in its source
# folder, and this leaves the checkout as it was. The package links to
# Dockerfile.server and audio/manifest.tsv at the top level: they come too.
mkdir "$work/source"
tar -C "$here" --exclude=__pycache__ --exclude='*.egg-info' -cf - pyproject.toml README.md src \
    Dockerfile.server audio/manifest.tsv \
    | tar -C "$work/source" -xf -
"$builder" -m pip wheel --quiet --no-deps --wheel-dir "$work/dist" "$work/source" 2>&1 \
    | { grep -v "^WARNING: Location '.*' is ignored" || true; } >&2
[ "${PIPESTATUS[0]}" -eq 0 ] || die "building the wheel failed (output above)"
wheel=$(ls "$work"/dist/earshot-*.whl)

say "a fresh virtual environment in $work/venv: the wheel, the example's requirements"
python3 -m venv "$work/venv"
pip() {  # quiet; the lines of a pip config naming absent find-links folders are noise
    "$work/venv/bin/python" -m pip --quiet --disable-pip-version-check "$@" 2>&1 \
        | { grep -v "^WARNING: Location '.*' is ignored" || true; } >&2
    return "${PIPESTATUS[0]}"
}
pip install "${wheel}[testing]" -r "$example/requirements.txt"
# whisper-live's own dependency list is its servers' (torch and more): --no-deps,
# and requirements.txt holds what its client imports.
pip install --no-deps whisper-live==0.10.0

where=$("$work/venv/bin/python" -c 'import earshot; print(earshot.__file__)')
case $where in
    "$work"/venv/*) ;;
    *) die "earshot imported from $where, not from the wheel" ;;
esac

# The clips: the same mirror as this checkout's suites, else downloaded into a cache.
if [ -z "${EARSHOT_AUDIO_MIRROR:-}" ] && [ -d "$here/../shared/audio" ]; then
    EARSHOT_AUDIO_MIRROR=$(cd "$here/../shared/audio" && pwd)
    export EARSHOT_AUDIO_MIRROR
fi

say "pytest in examples/whisperlive-client"
cd "$example"
"$work/venv/bin/python" -m pytest -p no:cacheprovider "$@"
