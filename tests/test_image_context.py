"""The server image builds from the installed package: a wheel installed in
another project assembles the same build context, so it gets the same tag
(and reuses an image the checkout built)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from earshot.testing import image

ROOT = Path(__file__).resolve().parents[1]
DIGEST = ("from earshot.testing import image; "
          "print(image.PACKAGE); print(image.input_digest('cpu', 'a-base-image'))")


def test_a_wheel_gives_the_checkouts_image_tag(tmp_path: Path) -> None:
    source = tmp_path / "source"  # setuptools builds in its source folder: a copy
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(ROOT / "src", source / "src", ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--wheel-dir", str(tmp_path / "dist"), str(source)],
                   check=True, timeout=300, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("earshot-*.whl")
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
    assert (tmp_path / "earshot" / "server" / "app.py").is_file()
    assert (tmp_path / "earshot" / "data" / "manifest.tsv").is_file()
    assert not list(tmp_path.rglob("__pycache__"))


def test_a_change_to_the_package_changes_the_tag(tmp_path: Path, monkeypatch) -> None:
    before = image.input_digest("cpu", "a-base-image")
    assert image.input_digest("cuda", "a-base-image") != before
    copy = tmp_path / "earshot"
    for name, file in image.package_files():
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(file.read_bytes())
    monkeypatch.setattr(image, "PACKAGE", copy)
    assert image.input_digest("cpu", "a-base-image") == before
    (copy / "server" / "app.py").write_text("# changed\n", encoding="utf-8")
    assert image.input_digest("cpu", "a-base-image") != before
