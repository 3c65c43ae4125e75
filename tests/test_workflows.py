"""The CI workflows: hosted CI runs ``make test`` and keeps its JUnit XML; the
self-hosted GPU runner runs the CUDA suite and ``make validate`` and keeps
``reports/``. Parsed as YAML, and the make commands they run dry-run (``make -n``)
to show that the JUnit file lands where the upload looks."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
CI, GPU = "ci.yml", "gpu.yml"
PINNED = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@v\d+$")  # owner/repo[/path]@vN


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def triggers(workflow: dict[str, Any]) -> set[str]:
    on = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` key as True
    return {on} if isinstance(on, str) else set(on)


def the_job(workflow: dict[str, Any]) -> dict[str, Any]:
    jobs = workflow["jobs"]
    assert len(jobs) == 1, f"expected one job, got {sorted(jobs)}"
    return next(iter(jobs.values()))


def step_running(job: dict[str, Any], target: str) -> tuple[int, list[str]]:
    """The index and words of the one step whose command is ``make TARGET ...``."""
    found = [(i, shlex.split(step["run"])) for i, step in enumerate(job["steps"])
             if "run" in step and shlex.split(step["run"])[:2] == ["make", target]]
    assert len(found) == 1, f"expected one step running make {target}, got {len(found)}"
    return found[0]


def uploads(job: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    return [(i, step) for i, step in enumerate(job["steps"])
            if step.get("uses", "").split("@")[0] == "actions/upload-artifact"]


def condition(step: dict[str, Any]) -> str:
    return str(step.get("if", "")).replace("${{", "").replace("}}", "").strip()


def junit_path(words: list[str]) -> str:
    """Where ``PYTEST_ARGS=--junitxml=PATH`` on a make command line writes the XML."""
    args = [w.split("=", 1)[1] for w in words if w.startswith("PYTEST_ARGS=")]
    assert args, f"no PYTEST_ARGS in {shlex.join(words)}"
    junit = [a.split("=", 1)[1] for a in shlex.split(args[0]) if a.startswith("--junitxml=")]
    assert junit, f"no --junitxml in PYTEST_ARGS of {shlex.join(words)}"
    return junit[0]


def pytest_command(words: list[str]) -> list[str]:
    """The pytest command that ``make`` would run for this command line (dry run)."""
    result = subprocess.run(["make", "-n", *words[1:]], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    commands = [part for line in result.stdout.splitlines()
                for part in line.rstrip(" \\").split(";") if "-m pytest" in part]
    assert len(commands) == 1, result.stdout
    return shlex.split(commands[0])


# -- hosted CI ---------------------------------------------------------------------


def test_ci_runs_on_pushes_and_pull_requests() -> None:
    assert {"push", "pull_request"} <= triggers(load(CI))


def test_ci_sets_up_python_3_11_on_a_hosted_runner() -> None:
    job = the_job(load(CI))
    assert job["runs-on"] == "ubuntu-latest"
    steps = [step.get("uses", "").split("@")[0] for step in job["steps"]]
    assert steps[:2] == ["actions/checkout", "actions/setup-python"]
    # A string: YAML reads 3.11 as a number, and 3.10 as 3.1.
    assert job["steps"][1]["with"]["python-version"] == "3.11"


def test_ci_runs_make_test_and_uploads_its_junit_even_on_failure() -> None:
    job = the_job(load(CI))
    index, words = step_running(job, "test")
    junit = junit_path(words)
    assert PurePosixPath(junit).parts[0] == "reports"
    after = [(i, step) for i, step in uploads(job) if i > index]
    assert [condition(step) for _, step in after] == ["always()"]
    assert PurePosixPath(after[0][1]["with"]["path"]) == PurePosixPath(junit)


# -- the self-hosted GPU runner ------------------------------------------------------


def test_gpu_runs_on_exactly_the_self_hosted_gpu_labels() -> None:
    assert the_job(load(GPU))["runs-on"] == ["self-hosted", "gpu"]


def test_gpu_never_runs_code_from_pull_requests() -> None:
    # A self-hosted runner must not run what a fork sends.
    assert not {"pull_request", "pull_request_target"} & triggers(load(GPU))
    assert {"push", "workflow_dispatch"} <= triggers(load(GPU))


def test_gpu_runs_the_cuda_suite_then_validate_and_uploads_reports_always() -> None:
    job = the_job(load(GPU))
    suite, _ = step_running(job, "integration-gpu")
    validate, _ = step_running(job, "validate")
    assert suite < validate
    assert condition(job["steps"][validate]) in ("!cancelled()", "always()")  # after a failure too
    after = [(i, step) for i, step in uploads(job) if i > validate]
    assert [condition(step) for _, step in after] == ["always()"]
    assert PurePosixPath(after[0][1]["with"]["path"]) == PurePosixPath("reports")


def test_gpu_runner_without_a_gpu_fails_instead_of_skipping() -> None:
    assert str(the_job(load(GPU))["env"]["GPU_REQUIRED"]) == "1"


# -- both ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", [CI, GPU])
def test_every_action_is_pinned_to_a_major_version(name: str) -> None:
    used = [step["uses"] for step in the_job(load(name))["steps"] if "uses" in step]
    assert used and all(PINNED.match(u) for u in used), used


@pytest.mark.parametrize(("name", "target"), [(CI, "test"), (GPU, "integration-gpu")])
def test_make_writes_the_junit_under_what_is_uploaded(name: str, target: str) -> None:
    job = the_job(load(name))
    _, words = step_running(job, target)
    junit = junit_path(words)
    command = pytest_command(words)
    assert f"--junitxml={junit}" in command
    uploaded = [PurePosixPath(step["with"]["path"]) for _, step in uploads(job)]
    assert any(PurePosixPath(junit) == u or u in PurePosixPath(junit).parents
               for u in uploaded), (junit, uploaded)
    if target == "integration-gpu":
        assert "--earshot-device" in command
        assert command[command.index("--earshot-device") + 1] == "cuda"
