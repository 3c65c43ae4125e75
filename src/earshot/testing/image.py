"""The server image: built from Dockerfile.server, tagged by what goes into it.

The build context is assembled from the *installed* earshot package, so a
checkout (editable install) and a wheel installed in another project build
the same image: ``Dockerfile.server`` (at the repository's top level, linked
from ``docker/`` beside this module, so a wheel carries it as package data)
and the engine scripts ship with the package, the dependencies come from
earshot's installed metadata, and the sources are the package's own files.

The tag carries a digest of that context, the variant and the base image id,
so an unchanged package reuses the image and any change rebuilds it. The
engine and the base image are ensured first by the scripts in ``docker/``
(which install and start Docker, or build a base image from Debian's packages,
where needed).

    python -m earshot.testing.image [--variant cpu|cuda]   # prints the tag
    python -m earshot.testing.image --context DIR          # writes the build context
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path

from filelock import FileLock

import earshot

PACKAGE = Path(earshot.__file__).resolve().parent
DOCKER = Path(__file__).resolve().parent / "docker"  # package data
DOCKERFILE = DOCKER / "Dockerfile.server"  # a link to the top level's, in a checkout
# The checkout's root, for the tools that only a checkout has (peer image, bench).
ROOT = PACKAGE.parents[1]
REPOSITORY = "earshot-server"
LABEL = "org.earshot.managed"  # on every image and container earshot makes
VARIANTS = ("cpu", "cuda")
# The package's files that go into the image: what a wheel ships (pyproject's
# package-data says the same), so an editable checkout adds nothing stray.
SHIPPED = ("*.py", "*.tsv", "*.sh", "Dockerfile.*")


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
    if _run(["bash", str(DOCKER / "ensure-docker.sh")], stdout=sys.stderr).returncode != 0:
        raise ImageError(f"no Docker engine ({DOCKER / 'ensure-docker.sh'} failed, see above)")


def ensure_base() -> str:
    """The base image to build on (see docker/ensure-base-image.sh)."""
    result = _run(["bash", str(DOCKER / "ensure-base-image.sh")], stdout=subprocess.PIPE)
    if result.returncode != 0 or not result.stdout.strip():
        raise ImageError("no base image (ensure-base-image.sh failed, see above)")
    return result.stdout.strip().splitlines()[-1]


def image_id(name: str) -> str | None:
    result = _run(["docker", "image", "inspect", "-f", "{{.Id}}", name], capture_output=True)
    return result.stdout.strip() if result.returncode == 0 else None


def requirements() -> str:
    """earshot's own dependencies (no extras), one per line, from its installed metadata."""
    required = metadata.requires("earshot") or []
    return "".join(f"{line}\n" for line in sorted(required) if "extra ==" not in line)


def package_files() -> Iterator[tuple[str, Path]]:
    """(path inside the context, file) for each shipped file of the package, sorted."""
    found = {file for pattern in SHIPPED for file in PACKAGE.rglob(pattern)}
    for file in sorted(found):
        if file.is_file() and "__pycache__" not in file.parts:
            yield f"src/earshot/{file.relative_to(PACKAGE).as_posix()}", file


def write_context(dest: Path) -> None:
    """The build context in ``dest``: Dockerfile.server, requirements.txt, src/earshot/
    (the repository's layout, which a ``docker compose`` build of the root also has)."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DOCKERFILE, dest / "Dockerfile.server")
    (dest / "requirements.txt").write_text(requirements())
    for name, file in package_files():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, dest / name)


def input_digest(variant: str, base_id: str) -> str:
    """sha256 over the build context, the variant and the base image's id."""
    digest = hashlib.sha256(f"{variant}\0{base_id}\0".encode())
    digest.update(DOCKERFILE.read_bytes() + b"\0" + requirements().encode() + b"\0")
    for name, file in package_files():
        digest.update(name.encode() + b"\0")
        digest.update(file.read_bytes())
    return digest.hexdigest()


def ensure_image(variant: str = "cpu") -> str:
    """The tag of an up-to-date server image, building it if needed."""
    if variant not in VARIANTS:
        raise ImageError(f"unknown variant {variant!r}; use {' or '.join(VARIANTS)}")
    if not DOCKERFILE.is_file():
        raise ImageError(f"{DOCKERFILE} not found: earshot is installed without its data")
    ensure_engine()
    base = ensure_base()
    base_id = image_id(base) or base
    tag = f"{REPOSITORY}:{variant}-{input_digest(variant, base_id)[:12]}"
    if image_id(tag):
        return tag
    # One build of a tag at a time on this machine: parallel test processes (xdist
    # workers, two sessions) that all find it missing wait for the first to build it.
    # (The lock file stays, in the user's cache folder: removing it would race.)
    with FileLock(_lock_path(variant)):
        if not image_id(tag):
            _build(variant, base, tag)
    return tag


def _lock_path(variant: str) -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "earshot"
    cache.mkdir(parents=True, exist_ok=True)
    return cache / f"image-{variant}.lock"


def _build(variant: str, base: str, tag: str) -> None:
    say(f"building {tag} on {base} from {PACKAGE} (a few minutes the first time)")
    with tempfile.TemporaryDirectory(prefix="earshot-image-") as context:
        write_context(Path(context))
        build = [
            "docker", "build", "--network", "host",
            "--file", str(Path(context) / "Dockerfile.server"),
            "--build-arg", f"BASE_IMAGE={base}", "--build-arg", f"VARIANT={variant}",
            "--label", f"{LABEL}=true", "--tag", tag, context,
        ]
        # Build output is progress: stderr, so stdout carries only the tag.
        if _run(build, stdout=sys.stderr).returncode != 0:
            raise ImageError(f"docker build of {tag} failed (output above)")
    remove_older(REPOSITORY, tag, prefix=f"{variant}-")


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
    parser.add_argument("--context", type=Path, metavar="DIR",
                        help="only write the build context to DIR (for a docker build by hand)")
    args = parser.parse_args(argv)
    if args.context is not None:
        write_context(args.context)
        print(args.context)
        return 0
    return print_tag(lambda: ensure_image(args.variant))


if __name__ == "__main__":
    sys.exit(main())
