"""A server in a local subprocess: the fast inner loop, and GPU hosts without Docker.

It listens on a free 127.0.0.1 port (the server picks it and logs it), and is
ready when /readyz answers 200; a restart keeps that port, so a client's URL
stays valid. Every wait has a deadline, and a failure to start carries the
process's last log lines. The process gets only the settings it is given:
``EARSHOT_*`` variables of the test run's own environment are not passed on
(a stray ``EARSHOT_API_KEY`` would otherwise change the server under test).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from earshot.testing.http import HttpEndpoints, ServerUnreachable
from earshot.testing.leaks import temp_prefix
from earshot.testing.waiting import WaitTimeout, eventually

_LISTENING = re.compile(r"listening\W.*?ws://[^:\s\"]+:(\d+)")


class ServerStartError(RuntimeError):
    """The server process did not become ready; the text holds its log tail."""


class LocalServer(HttpEndpoints):
    """``python -m earshot.server`` in a subprocess, owned by this object."""

    controllable = True
    host = "127.0.0.1"

    def __init__(
        self,
        *flags: str,
        api_key: str | None = None,
        env: Mapping[str, str] | None = None,
        startup_timeout: float = 60.0,
        port: int = 0,
    ) -> None:
        self.api_key = api_key
        self.flags = list(flags)
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("EARSHOT_")}
        # The key in the environment (readable by the process's owner only), not in
        # argv, which every user of the machine sees in ps.
        secret = {"EARSHOT_API_KEY": api_key} if api_key else {}
        self.env = {**inherited, **(env or {}), **secret}
        self.startup_timeout = startup_timeout
        self.port: int | None = port or None  # a restart reuses the port it had
        self.process: subprocess.Popen[bytes] | None = None
        self._log_dir: tempfile.TemporaryDirectory[str] | None = None
        self._old_logs = ""  # the logs of earlier runs of this server

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> LocalServer:
        command = [sys.executable, "-m", "earshot.server", "--host", "127.0.0.1",
                   "--port", str(self.port or 0), *self.flags]
        self._log_dir = tempfile.TemporaryDirectory(prefix=temp_prefix("server"))
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=self.env
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        def probe() -> str:
            assert self.process is not None
            if self.process.poll() is not None:
                raise ServerStartError(
                    f"server exited with code {self.process.returncode} before it was ready; "
                    f"log:\n{self.log_tail()}"
                )
            if self.port is None:
                match = _LISTENING.search(self.log_path.read_text(errors="replace"))
                if not match:
                    return "no 'listening' line in the log yet"
                self.port = int(match.group(1))
            try:
                return f"/readyz {self.get('/readyz')[0]}"
            except ServerUnreachable as exc:
                return str(exc)

        try:
            eventually(probe, lambda seen: seen == "/readyz 200", timeout=self.startup_timeout,
                       description="the server's /readyz to answer 200", max_interval=0.5)
        except WaitTimeout as exc:
            raise ServerStartError(f"{exc}; log:\n{self.log_tail()}") from None

    @property
    def log_path(self) -> Path:
        assert self._log_dir is not None, "not started"
        return Path(self._log_dir.name) / "server.log"

    def kill(self) -> None:
        """SIGKILL: the server vanishes without a word (clients see the socket die)."""
        self.signal(signal.SIGKILL)
        self.stop()

    def restart(self, timeout: float = 10.0) -> None:
        """Stop (draining) and start again on the same port."""
        self.terminate(timeout)
        self.start()

    def terminate(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (the server drains), wait; the exit code. ``start()`` runs it again
        on the same port (the same as ``stop()`` here: a process keeps nothing)."""
        return self.stop(timeout)

    def pause(self) -> None:
        """SIGSTOP: the process freezes; connections stay open but nothing answers."""
        self.signal(signal.SIGSTOP)

    def unpause(self) -> None:
        self.signal(signal.SIGCONT)

    def signal(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)

    def exit_code(self) -> int | None:
        """None while the process runs; its exit code once it ended."""
        return None if self.process is None else self.process.poll()

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait, SIGKILL if it would not stop; returns the exit code."""
        if self.process is None:
            return None
        self.signal(signal.SIGTERM)
        self.signal(signal.SIGCONT)  # a paused process must wake to see the SIGTERM
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(timeout)
        self._keep_log()
        return code

    def _keep_log(self) -> None:
        if self._log_dir is not None:
            self._old_logs += self.log_path.read_text(errors="replace")
            self._log_dir.cleanup()
            self._log_dir = None

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- access ------------------------------------------------------------

    def log_text(self) -> str:
        current = self.log_path.read_text(errors="replace") if self._log_dir else ""
        return self._old_logs + current

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])
