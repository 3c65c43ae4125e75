"""What the README says each make target runs, read from make's own dry run
(``make -n``: the commands are printed, not run) and from ``.ci/run``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def dry_run(*args: str) -> list[str]:
    """The commands ``make -n ARGS`` would run, one per line (a command continued
    with a backslash joined into one, its spaces collapsed)."""
    done = subprocess.run(["make", "-n", "--no-print-directory", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=True)
    joined = done.stdout.replace("\\\n", " ")
    return [" ".join(line.split()) for line in joined.splitlines() if line.strip()]


def _index(commands: list[str], *needles: str) -> int:
    return next(i for i, command in enumerate(commands) if all(n in command for n in needles))


def test_ci_runs_make_test_and_nothing_else() -> None:
    lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[-1] == "make test"
    assert all(line.startswith(("set ", "cd ")) for line in lines[:-1]), lines


def test_make_test_lints_then_runs_every_suite_and_the_doctest_then_the_example() -> None:
    commands = dry_run("test")
    lint = _index(commands, "ruff check")
    image = _index(commands, "earshot.testing.image")
    suites = _index(commands, "pytest tests integration",
                    "src/earshot/testing/container.py --doctest-modules")
    example = _index(commands, "scripts/run-example.sh")
    assert lint < image < suites < example


def test_make_integration_runs_the_scenario_suite_on_the_image_on_six_workers_by_default() -> None:
    """On xdist workers by default, grouped (--dist loadgroup: the plugin's groups of
    tests with servers of their own), without the CUDA image's tests; JOBS=0: serial."""
    commands = dry_run("integration")
    assert commands[-1].endswith(
        '-m pytest integration -v -n 6 --dist loadgroup -m "not cuda_image"')
    assert _index(commands, "earshot.testing.image") < len(commands) - 1
    assert "-n 0 --dist loadgroup" in dry_run("integration", "JOBS=0")[-1]
    assert "-n 3 --dist loadgroup" in dry_run("integration", "JOBS=3")[-1]


def _collected(*args: str) -> set[str]:
    done = subprocess.run([sys.executable, "-m", "pytest", "integration", "--collect-only", "-q",
                           "-p", "no:randomly", "-p", "no:cacheprovider", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    return {line.split("::")[0] for line in done.stdout.splitlines() if "::" in line}


def test_make_integrations_marker_expression_leaves_out_exactly_the_cuda_image_tests() -> None:
    assert _collected("-m", "cuda_image") == {"integration/test_cuda_image.py"}
    left = _collected("-m", "not cuda_image")
    assert "integration/test_cuda_image.py" not in left and len(left) >= 10


@pytest.mark.parametrize("kind", ["ps -aq", "images -q"])
def test_make_clean_removes_earshot_labelled_containers_and_images(kind: str) -> None:
    commands = dry_run("clean")
    assert any(f"docker {kind} --filter label=org.earshot.managed" in c for c in commands)


def last(*args: str) -> str:
    """The last command of ``make -n ARGS``: the target's own."""
    return dry_run(*args)[-1]


PY = ".venv/bin/python"


@pytest.mark.parametrize(("target", "command"), [
    (["unit"], f"{PY} -m pytest tests"),
    (["serve"], f"{PY} -m earshot.server"),
    (["bench"], f"{PY} bench/server_latency.py"),
    (["isolation"], f"{PY} scripts/isolation.py integration"),
    (["validate"], f"{PY} -m earshot.validation --device cpu"),
    (["validate", "DEVICE=cuda"], f"{PY} -m earshot.validation --device cuda"),
    (["validate", "TARGET=ws://host:9090", "API_KEY=k"],
     f"{PY} -m earshot.validation --api-key k --target ws://host:9090"),
    (["validate-peer"], f"{PY} -m earshot.validation --peer"),
    (["load"], f"{PY} -m earshot.load load --users 4 --spawn-rate 1 --duration 60 --workers 0"),
    (["load", "USERS=8", "SPAWN_RATE=2", "DURATION=300", "WORKERS=2", "TARGET=ws://host:9090",
      "API_KEY=k"], f"{PY} -m earshot.load load --target ws://host:9090 --api-key k --users 8 "
                    "--spawn-rate 2 --duration 300 --workers 2"),
    (["capacity"], f"{PY} -m earshot.load capacity --soak 1800"),
    (["capacity", "SOAK=120", "PEER=1"], f"{PY} -m earshot.load capacity --soak 120 --peer"),
], ids=lambda value: " ".join(value) if isinstance(value, list) else None)
def test_each_target_runs_the_command_the_readme_describes(target: list[str],
                                                            command: str) -> None:
    assert last(*target) == command


@pytest.mark.parametrize("target", ["validate", "load", "capacity", "isolation", "integration"])
def test_targets_on_the_container_build_the_image_first_and_on_a_target_do_not(
        target: str) -> None:
    commands = dry_run(target)
    assert _index(commands, "ensure-docker.sh") < _index(commands, "earshot.testing.image",
                                                         "--variant cpu") < len(commands) - 1
    if target in ("validate", "load", "capacity"):
        assert not any("earshot.testing.image" in c or "ensure-docker" in c
                       for c in dry_run(target, "TARGET=ws://host:9090"))


def test_make_validate_builds_the_image_its_device_runs() -> None:
    assert any("earshot.testing.image --variant cuda" in c
               for c in dry_run("validate", "DEVICE=cuda"))
    assert any("earshot.testing.image --variant cpu" in c for c in dry_run("validate"))
    assert not any("--variant cuda" in c for c in dry_run("validate"))


def test_make_image_builds_the_variant_asked_for() -> None:
    assert "earshot.testing.image --variant cuda" in last("image", "VARIANT=cuda")
    assert "earshot.testing.image --variant cpu" in last("image")


def test_peer_targets_build_the_peer_image() -> None:
    for target in (["validate-peer"], ["capacity", "PEER=1"]):
        assert any("-m earshot.testing.peer" in c for c in dry_run(*target))
    assert not any("earshot.testing.peer" in c for c in dry_run("capacity"))


def test_up_logs_and_down_drive_the_compose_service_on_the_image() -> None:
    up = dry_run("up")
    assert any("EARSHOT_IMAGE=$tag" in c and c.endswith("up -d server") for c in up)
    assert last("down").endswith("down --remove-orphans")
    assert last("logs").endswith("logs --tail 100 server")


def test_make_setup_creates_the_venv_and_installs_earshot_with_its_test_extras(
        tmp_path: Path) -> None:
    commands = dry_run("setup", f"VENV={tmp_path / 'venv'}")
    venv = tmp_path / "venv"
    assert commands[_index(commands, "-m venv")].endswith(f"-m venv {venv}")
    assert f"{venv}/bin/python -m pip install --quiet --editable '.[test]'" in commands
    assert commands[-1] == f"touch {venv}/.installed"


def test_integration_gpu_without_a_gpu_says_so_in_one_line_and_exits_0_or_1_if_required(
        ) -> None:
    if subprocess.run(["bash", "scripts/gpu-check.sh"], cwd=ROOT, capture_output=True,
                      timeout=60).returncode == 0:
        pytest.skip("this host has a GPU and its runtime: make integration-gpu would run")
    run = subprocess.run(["make", "--no-print-directory", "-s", "integration-gpu"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    [line] = run.stdout.splitlines()
    assert "GPU" in line or "nvidia" in line.lower()
    required = subprocess.run(["make", "--no-print-directory", "-s", "integration-gpu",
                               "GPU_REQUIRED=1"], cwd=ROOT, capture_output=True, text=True,
                              timeout=120)
    assert required.returncode != 0
    assert required.stdout.splitlines() == [line, "integration-gpu: GPU_REQUIRED is set: failing"]
