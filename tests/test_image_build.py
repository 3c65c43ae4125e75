"""earshot.testing.image's decisions against a stand-in of the Docker CLI (named as
such: it records each command and answers as an engine would), so no engine is
needed: an unchanged image is reused, a missing one built with the README's
arguments, superseded ones of the same variant removed, a failed build named;
the base image's id is part of the tag; the command prints the tag or one error."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from earshot.testing import image

BASE = "earshot-base:bookworm"


class StandInDocker:
    """Answers ``image._run``'s commands as a Docker engine would and records them."""

    def __init__(self, images: dict[str, str], build_ok: bool = True) -> None:
        self.images = dict(images)  # name -> id
        self.build_ok = build_ok
        self.commands: list[list[str]] = []

    def __call__(self, command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        self.commands.append(command)
        out, rc = "", 0
        if command[:2] == ["docker", "info"]:
            pass
        elif command[0] == "bash" and command[1].endswith("ensure-base-image.sh"):
            out = f"building nothing\n{BASE}\n"
        elif command[:3] == ["docker", "image", "inspect"]:
            name = command[-1]
            out, rc = (self.images[name], 0) if name in self.images else ("", 1)
        elif command[:2] == ["docker", "build"]:
            rc = 0 if self.build_ok else 1
            if self.build_ok:
                self.images[command[command.index("--tag") + 1]] = "sha256:new"
        elif command[:3] == ["docker", "image", "ls"]:
            out = "\n".join(name for name in self.images if name.startswith(command[-1] + ":"))
        elif command[:2] == ["docker", "rmi"]:
            for name in command[2:]:
                self.images.pop(name, None)
        else:
            raise AssertionError(f"unexpected command {command}")
        return subprocess.CompletedProcess(command, rc, out, "")

    def ran(self, *prefix: str) -> list[list[str]]:
        return [c for c in self.commands if c[:len(prefix)] == list(prefix)]


@pytest.fixture
def docker(monkeypatch: pytest.MonkeyPatch) -> Callable[..., StandInDocker]:
    def make(images: dict[str, str], build_ok: bool = True) -> StandInDocker:
        stand_in = StandInDocker({BASE: "sha256:base", **images}, build_ok)
        monkeypatch.setattr(image, "_run", stand_in)
        return stand_in

    return make


def tag_for(variant: str, base_id: str = "sha256:base") -> str:
    return f"{image.REPOSITORY}:{variant}-{image.input_digest(variant, base_id)[:12]}"


def test_an_unchanged_package_reuses_its_image_and_builds_nothing(docker) -> None:
    engine = docker({tag_for("cpu"): "sha256:kept"})
    assert image.ensure_image("cpu") == tag_for("cpu")
    assert engine.ran("docker", "build") == [] and engine.ran("docker", "rmi") == []


def test_a_missing_image_is_built_on_the_base_with_the_variant_and_the_label(docker) -> None:
    engine = docker({})
    tag = image.ensure_image("cuda")
    assert tag == tag_for("cuda")
    [build] = engine.ran("docker", "build")
    context = build[-1]
    assert build == ["docker", "build", "--network", "host",
                     "--file", str(Path(context) / "Dockerfile.server"),
                     "--build-arg", f"BASE_IMAGE={BASE}", "--build-arg", "VARIANT=cuda",
                     "--label", "org.earshot.managed=true", "--tag", tag, context]
    assert not Path(context).exists()  # the context's temp dir is gone


def test_after_a_build_the_same_variants_older_images_are_removed_and_no_other(docker) -> None:
    older_cpu, cuda = f"{image.REPOSITORY}:cpu-000000000000", f"{image.REPOSITORY}:cuda-1"
    engine = docker({older_cpu: "sha256:old", cuda: "sha256:cuda"})
    tag = image.ensure_image("cpu")
    assert engine.ran("docker", "rmi") == [["docker", "rmi", older_cpu]]
    assert set(engine.images) == {BASE, cuda, tag}


def test_a_failed_build_is_an_image_error_naming_the_tag(docker) -> None:
    docker({}, build_ok=False)
    with pytest.raises(image.ImageError, match=rf"docker build of {tag_for('cpu')} failed"):
        image.ensure_image("cpu")


def test_the_base_images_id_is_part_of_the_tag() -> None:
    assert image.input_digest("cpu", "sha256:a") != image.input_digest("cpu", "sha256:b")
    assert image.input_digest("cpu", "sha256:a") != image.input_digest("cuda", "sha256:a")
    assert image.input_digest("cpu", "sha256:a") == image.input_digest("cpu", "sha256:a")


def test_an_unknown_variant_is_refused_before_any_engine_command(docker) -> None:
    engine = docker({})
    with pytest.raises(image.ImageError, match="unknown variant 'tpu'; use cpu or cuda"):
        image.ensure_image("tpu")
    assert engine.commands == []


def test_the_command_prints_the_tag_or_one_error_line_and_exits_1(docker, capsys) -> None:
    docker({tag_for("cpu"): "sha256:kept"})
    assert image.main([]) == 0
    assert capsys.readouterr().out == f"{tag_for('cpu')}\n"
    docker({}, build_ok=False)
    assert image.main(["--variant", "cuda"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines()[-1] == (f"error: docker build of {tag_for('cuda')} "
                                             "failed (output above)")


def test_the_command_writes_the_build_context_alone_with_context(tmp_path, docker,
                                                                 capsys) -> None:
    engine = docker({})
    assert image.main(["--context", str(tmp_path / "ctx")]) == 0
    assert capsys.readouterr().out == f"{tmp_path / 'ctx'}\n"
    assert (tmp_path / "ctx" / "Dockerfile.server").is_file()
    assert (tmp_path / "ctx" / "src" / "earshot" / "testing" / "image.py").is_file()
    assert engine.commands == []  # no engine asked


class SlowBuildDocker(StandInDocker):
    """A stand-in whose build waits until a second process has looked for the tag
    too, so two builds of it would overlap if nothing kept them apart."""

    def __init__(self, images: dict[str, str], tag: str) -> None:
        super().__init__(images)
        self.tag = tag
        self.looked = threading.Condition()
        self.lookups = 0

    def __call__(self, command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        if command[:3] == ["docker", "image", "inspect"] and command[-1] == self.tag:
            with self.looked:
                self.lookups += 1
                self.looked.notify_all()
        if command[:2] == ["docker", "build"]:
            with self.looked:  # the first caller: twice; the second: once, before its lock
                assert self.looked.wait_for(lambda: self.lookups >= 3, timeout=10)
        return super().__call__(command, **kwargs)


def test_two_processes_that_find_the_image_missing_build_it_once(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    engine = SlowBuildDocker({BASE: "sha256:base"}, tag_for("cpu"))
    monkeypatch.setattr(image, "_run", engine)
    tags: list[str] = []
    callers = [threading.Thread(target=lambda: tags.append(image.ensure_image("cpu")))
               for _ in range(2)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(30)
    assert tags == [tag_for("cpu")] * 2
    assert len(engine.ran("docker", "build")) == 1
    assert (tmp_path / "earshot" / "image-cpu.lock").exists()  # in the user's cache folder
