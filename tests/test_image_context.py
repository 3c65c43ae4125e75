"""The server image builds from the installed package: a wheel installed in
another project assembles the same build context, so it gets the same tag
(and reuses an image the checkout built)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from earshot.testing import image

ROOT = Path(__file__).resolve().parents[1]
DIGEST = ("from earshot.testing import image; "
          "print(image.PACKAGE); print(image.input_digest('cpu', 'a-base-image'))")


def _source_copy(dest: Path) -> Path:
    """What a clone holds for a build, links and all (setuptools builds in its
    source folder: a copy keeps the checkout clean)."""
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(ROOT / "src", dest / "src", ignore=skip, symlinks=True)
    (dest / "audio").mkdir()
    for name in ("pyproject.toml", "README.md", "Dockerfile.server",
                 "audio/manifest.tsv"):
        shutil.copy(ROOT / name, dest / name)
    return dest


def _wheel(source: Path, dist: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--wheel-dir", str(dist), str(source)],
                   check=True, timeout=300, capture_output=True)
    (wheel,) = dist.glob("earshot-*.whl")
    return wheel


def _top_level_files_in(wheel: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(wheel) as archive:
        return {name: archive.read(f"earshot/{name}")
                for name in ("testing/docker/Dockerfile.server", "data/manifest.tsv")}


TOP_LEVEL = {"testing/docker/Dockerfile.server": "Dockerfile.server",
             "data/manifest.tsv": "audio/manifest.tsv"}


def test_a_wheel_and_an_sdists_wheel_carry_the_top_levels_dockerfile_and_manifest(
        tmp_path: Path) -> None:
    """Dockerfile.server and audio/manifest.tsv live at the repository's top level;
    the package links to them, and a wheel holds their contents, whether built
    from a clone or from an sdist (whose copies are the files, not the links)."""
    source = _source_copy(tmp_path / "source")
    assert (source / "src" / "earshot" / "data" / "manifest.tsv").is_symlink()
    wanted = {name: (ROOT / top).read_bytes() for name, top in TOP_LEVEL.items()}
    assert _top_level_files_in(_wheel(source, tmp_path / "dist")) == wanted
    subprocess.run([sys.executable, "-m", "build", "--sdist", "--outdir", str(tmp_path / "sd"),
                    str(source)], check=True, timeout=300, capture_output=True)
    (sdist,) = (tmp_path / "sd").glob("earshot-*.tar.gz")
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp_path / "unpacked", filter="data")
    (unpacked,) = (tmp_path / "unpacked").iterdir()
    assert _top_level_files_in(_wheel(unpacked, tmp_path / "dist-from-sdist")) == wanted


def test_a_wheel_gives_the_checkouts_image_tag(tmp_path: Path) -> None:
    wheel = _wheel(_source_copy(tmp_path / "source"), tmp_path / "dist")
    installed = tmp_path / "site-packages"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(installed)
    found = subprocess.run([sys.executable, "-c", DIGEST], capture_output=True, text=True,
                           env={"PYTHONPATH": str(installed), "PATH": "/usr/bin:/bin"},
                           cwd=tmp_path, timeout=60, check=True).stdout.split()
    assert found[0] == str(installed / "earshot")  # the wheel's copy, not the checkout
    assert found[1] == image.input_digest("cpu", "a-base-image")


def test_the_context_holds_the_dockerfile_the_requirements_and_the_package(
        tmp_path: Path) -> None:
    image.write_context(tmp_path)
    assert (tmp_path / "Dockerfile.server").read_text() == image.DOCKERFILE.read_text()
    requirements = (tmp_path / "requirements.txt").read_text().splitlines()
    assert any(line.startswith("faster-whisper") for line in requirements)
    assert not any("pytest" in line for line in requirements)  # no extras
    assert (tmp_path / "src" / "earshot" / "server" / "app.py").is_file()
    # The package's links to the top level's files arrive as the files themselves.
    manifest = tmp_path / "src" / "earshot" / "data" / "manifest.tsv"
    assert not manifest.is_symlink() and not (tmp_path / "Dockerfile.server").is_symlink()
    assert manifest.read_text() == (ROOT / "audio" / "manifest.tsv").read_text()
    assert (tmp_path / "Dockerfile.server").read_text() == (ROOT / "Dockerfile.server").read_text()
    assert not list(tmp_path.rglob("__pycache__"))


def test_a_change_to_the_package_changes_the_tag(tmp_path: Path, monkeypatch) -> None:
    before = image.input_digest("cpu", "a-base-image")
    assert image.input_digest("cuda", "a-base-image") != before
    copy = tmp_path / "src" / "earshot"
    for name, file in image.package_files():
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(file.read_bytes())
    monkeypatch.setattr(image, "PACKAGE", copy)
    assert image.input_digest("cpu", "a-base-image") == before
    (copy / "server" / "app.py").write_text("# changed\n", encoding="utf-8")
    assert image.input_digest("cpu", "a-base-image") != before
