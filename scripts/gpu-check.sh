#!/usr/bin/env bash
# Can the CUDA image run here with the GPU? Exit 0, silently, when it can: an
# NVIDIA GPU (nvidia-smi lists one) and an NVIDIA container runtime (docker
# info lists an nvidia runtime, or nvidia-container-toolkit is installed, which
# serves `docker run --gpus`). Otherwise print one line saying which is
# missing and exit 1. `make integration-gpu` runs this first.
set -euo pipefail

missing() {
    echo "integration-gpu: $*; nothing to run"
    exit 1
}

if ! command -v nvidia-smi >/dev/null 2>&1; then
    missing "no NVIDIA GPU here (no nvidia-smi, so no NVIDIA driver)"
fi
if ! nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
    missing "no NVIDIA GPU here (nvidia-smi lists none)"
fi
if docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q '"nvidia'; then
    exit 0
fi
for tool in nvidia-container-runtime-hook nvidia-container-runtime nvidia-ctk; do
    if command -v "$tool" >/dev/null 2>&1; then
        exit 0
    fi
done
missing "an NVIDIA GPU but no NVIDIA container runtime (docker info lists no nvidia" \
    "runtime and nvidia-container-toolkit is not installed)"
