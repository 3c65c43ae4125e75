"""``--device cuda`` where CTranslate2 sees no GPU: a bad setting, refused at start
(exit 2, one line naming the missing GPU) before the server listens or loads a model."""

from __future__ import annotations

import os
import subprocess
import sys

import ctranslate2
import pytest

from earshot.server.config import ConfigError, parse_config

NO_GPU = r"--device cuda: no CUDA GPU found \(.*\); use --device auto or cpu"


def test_cuda_without_a_gpu_is_refused_from_flag_and_environment(monkeypatch) -> None:
    monkeypatch.setattr(ctranslate2, "get_cuda_device_count", lambda: 0)
    with pytest.raises(ConfigError, match=f"^{NO_GPU}$"):
        parse_config(["--device", "cuda"], {})
    with pytest.raises(ConfigError, match=f"^{NO_GPU}$"):
        parse_config([], {"EARSHOT_DEVICE": "cuda"})


def test_cuda_with_a_gpu_is_accepted(monkeypatch) -> None:
    monkeypatch.setattr(ctranslate2, "get_cuda_device_count", lambda: 1)
    assert parse_config(["--device", "cuda"], {}).device == "cuda"


def test_auto_and_cpu_do_not_need_a_gpu(monkeypatch) -> None:
    def probe() -> int:
        raise AssertionError("only --device cuda asks for a GPU at start")

    monkeypatch.setattr(ctranslate2, "get_cuda_device_count", probe)
    assert parse_config(["--device", "auto"], {}).device == "auto"
    assert parse_config(["--device", "cpu"], {}).device == "cpu"


@pytest.mark.skipif(ctranslate2.get_cuda_device_count() > 0, reason="this host has a GPU")
def test_server_exits_2_with_one_line_naming_the_missing_gpu() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EARSHOT_")}
    result = subprocess.run(
        [sys.executable, "-m", "earshot.server", "--port", "0", "--device", "cuda"],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert result.returncode == 2
    assert result.stdout == ""  # nothing logged: it never listened
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("earshot-server: --device cuda: no CUDA GPU found"), lines[0]
