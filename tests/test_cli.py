"""``earshot transcribe``: its errors (one line on stderr, exit 1) and its live
partial line on a terminal. The transcript itself against a real server is
integration/test_transcription.py's."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from answering import Answering  # pytest puts tests/ on the path

from earshot import audio
from earshot.client import cli
from earshot.protocol import Segment


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once it is closed


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = captured.err.splitlines()
    assert line.startswith("earshot: ")
    return line


def test_a_server_that_does_not_answer_is_one_line_and_exit_1(capsys) -> None:
    jfk = str(audio.clip_path("jfk.flac"))
    assert cli.main(["transcribe", jfk, "--url", f"ws://127.0.0.1:{closed_port()}"]) == 1
    line = one_error_line(capsys)
    assert "127.0.0.1" in line


@pytest.fixture
def refusing_server() -> Iterator[int]:
    """A stand-in for a server that wants a key it was not given: it answers the
    upgrade request with HTTP 401, once."""
    def refuse(conn: socket.socket) -> None:
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")

    with Answering("refusing-server-stand-in") as server:
        server.answer(refuse)
        yield server.port


def test_a_refused_key_is_one_line_and_exit_1(refusing_server: int, capsys) -> None:
    jfk = str(audio.clip_path("jfk.flac"))
    url = f"ws://127.0.0.1:{refusing_server}"
    assert cli.main(["transcribe", jfk, "--url", url, "--api-key", "wrong"]) == 1
    assert "401" in one_error_line(capsys)


def test_a_file_that_is_not_audio_is_named_before_any_server_is_asked(tmp_path: Path,
                                                                     capsys) -> None:
    bad = tmp_path / "notes.wav"
    bad.write_text("not audio")
    assert cli.main(["transcribe", str(bad), "--url", f"ws://127.0.0.1:{closed_port()}"]) == 1
    assert f"cannot decode {bad}" in one_error_line(capsys)


class Terminal(io.StringIO):
    """A stderr that says it is a terminal (or not) and keeps what is written."""

    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def client_with(completed: list[str], partial: str | None) -> SimpleNamespace:
    segments = [Segment(float(n), n + 1.0, text, completed=True)
                for n, text in enumerate(completed)]
    return SimpleNamespace(
        transcript=SimpleNamespace(completed=segments),
        partial=None if partial is None else Segment(9.0, 10.0, partial, completed=False))


@pytest.mark.parametrize(("completed", "partial", "shown"), [
    (["One.", " Two.", " Three."], " four", "Two. Three. four"),  # the last two, then the partial
    (["Only."], None, "Only."),
    ([], " just a partial ", "just a partial"),
    (["x" * 150], None, "x" * 100),  # the last 100 characters
])
def test_on_a_terminal_the_partial_line_is_rewritten_in_place(monkeypatch, completed, partial,
                                                               shown) -> None:
    terminal = Terminal(tty=True)
    monkeypatch.setattr(cli.sys, "stderr", terminal)
    cli._show_partial(client_with(completed, partial))
    assert terminal.getvalue() == f"\r\033[K{shown}"


def test_off_a_terminal_no_partial_line_is_written(monkeypatch) -> None:
    pipe = Terminal(tty=False)
    monkeypatch.setattr(cli.sys, "stderr", pipe)
    cli._show_partial(client_with(["One."], " two"))
    assert pipe.getvalue() == ""


@pytest.mark.parametrize("script", ["earshot-server", "earshot"])
def test_the_installed_console_scripts_answer_help(script: str) -> None:
    path = Path(sys.executable).parent / script
    assert path.is_file(), f"{script} is not installed beside {sys.executable}"
    done = subprocess.run([str(path), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    words = {"earshot-server": ["usage: earshot-server", "--max-clients", "EARSHOT_PORT"],
             "earshot": ["usage: earshot", "transcribe"]}[script]
    assert all(word in done.stdout for word in words), done.stdout
