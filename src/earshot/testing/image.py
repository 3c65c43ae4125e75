"""The server image: built from Dockerfile.server, tagged by what goes into it.

The tag carries a digest of the build inputs (Dockerfile, package sources,
variant, base image id), so an unchanged tree reuses the image and any change
rebuilds it. The engine and the base image are ensured first by the scripts
in ``scripts/`` (which install and start Docker, or build a base image from
Debian's packages, where needed).

    python -m earshot.testing.image [--variant cpu|cuda]   # prints the tag
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = ROOT / "Dockerfile.server"
REPOSITORY = "earshot-server"
LABEL = "org.earshot.managed"  # on every image and container earshot makes
VARIANTS = ("cpu", "cuda")
# What Dockerfile.server copies, plus the files that shape the build.
INPUTS = ("Dockerfile.server", ".dockerignore", "pyproject.toml", "README.md", "src")


class ImageError(RuntimeError):
    """The image could not be built; the text says why."""


def say(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


def _run(command: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, text=True, **kwargs)


def ensure_engine() -> None:
    """Start (and if need be install) a Docker engine; no-op when one answers."""
    if _run(["docker", "info"], capture_output=True).returncode == 0:
        return
    if _run([str(ROOT / "scripts" / "ensure-docker.sh")], stdout=sys.stderr).returncode != 0:
        raise ImageError("no Docker engine (scripts/ensure-docker.sh failed, see above)")


def ensure_base() -> str:
    """The base image to build on (see scripts/ensure-base-image.sh)."""
    result = _run([str(ROOT / "scripts" / "ensure-base-image.sh")], stdout=subprocess.PIPE)
    if result.returncode != 0 or not result.stdout.strip():
        raise ImageError("no base image (scripts/ensure-base-image.sh failed, see above)")
    return result.stdout.strip().splitlines()[-1]


def image_id(name: str) -> str | None:
    result = _run(["docker", "image", "inspect", "-f", "{{.Id}}", name], capture_output=True)
    return result.stdout.strip() if result.returncode == 0 else None


def input_digest(variant: str, base_id: str) -> str:
    """sha256 over the build inputs, the variant and the base image's id."""
    digest = hashlib.sha256(f"{variant}\0{base_id}\0".encode())
    for name in INPUTS:
        path = ROOT / name
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        for file in files:
            if not file.is_file() or "__pycache__" in file.parts or ".egg-info" in str(file):
                continue
            digest.update(str(file.relative_to(ROOT)).encode() + b"\0")
            digest.update(file.read_bytes())
    return digest.hexdigest()


def ensure_image(variant: str = "cpu") -> str:
    """The tag of an up-to-date server image, building it if needed."""
    if variant not in VARIANTS:
        raise ImageError(f"unknown variant {variant!r}; use {' or '.join(VARIANTS)}")
    if not DOCKERFILE.is_file():
        raise ImageError(f"{DOCKERFILE} not found: build the image from an earshot checkout")
    ensure_engine()
    base = ensure_base()
    base_id = image_id(base) or base
    tag = f"{REPOSITORY}:{variant}-{input_digest(variant, base_id)[:12]}"
    if image_id(tag):
        return tag
    say(f"building {tag} on {base} (a few minutes the first time)")
    build = [
        "docker", "build", "--network", "host", "--file", str(DOCKERFILE),
        "--build-arg", f"BASE_IMAGE={base}", "--build-arg", f"VARIANT={variant}",
        "--label", f"{LABEL}=true", "--tag", tag, str(ROOT),
    ]
    # Build output is progress: stderr, so stdout carries only the tag.
    if _run(build, stdout=sys.stderr).returncode != 0:
        raise ImageError(f"docker build of {tag} failed (output above)")
    remove_older(REPOSITORY, tag, prefix=f"{variant}-")
    return tag


def remove_older(repository: str, keep: str, prefix: str = "") -> None:
    """Drop the repository's superseded images (tags starting with ``prefix``), so
    rebuilds do not fill the disk."""
    listed = _run(["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}",
                   repository], capture_output=True).stdout.split()
    old = [name for name in listed if name.startswith(f"{repository}:{prefix}") and name != keep]
    if old:  # an image a container still uses is kept: rmi refuses, and that is fine
        _run(["docker", "rmi", *old], capture_output=True)


def print_tag(build: Callable[[], str]) -> int:
    """A command's body: build or reuse an image, print its tag; exit 1 with the reason."""
    try:
        print(build())
    except ImageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build or reuse the earshot server image.")
    parser.add_argument("--variant", choices=VARIANTS, default="cpu")
    args = parser.parse_args(argv)
    return print_tag(lambda: ensure_image(args.variant))


if __name__ == "__main__":
    sys.exit(main())
