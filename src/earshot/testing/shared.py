"""One server for several test processes: started by one, reached by the others.

Under pytest-xdist the workers run the scenarios and the controller owns the
suite's shared server. Workers end at different times (each stops when it has
nothing left to run), so none of them may own what the others still use; the
controller lives until the last one is done.

The controller and its workers meet in a folder (a ``Handoff``): a worker that
needs the server leaves a request there (``want()``); the controller's
``ServerHost`` sees it, starts the server (a container or a local process) and
writes where it listens; each worker then reaches it as a ``SharedServer``.
Nothing starts until a worker asks, so a parallel run of suites that use no
server starts none. The controller stops the server and removes the folder.

A ``SharedServer`` is not controllable (a test that stops or pauses a server
has one of its own), and it is shared: a worker counts only its own sessions
on it, by uid, so its leak guard never counts a neighbour's, and never hides
its own behind them. The container carries the controller's pid as its owner,
so no worker counts it among its own containers either.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import traceback
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import Any

from earshot.testing.http import HttpEndpoints
from earshot.testing.leaks import temp_prefix
from earshot.testing.waiting import WaitTimeout, eventually

POLL_SECONDS = 0.1  # how often the controller looks for a request
CLOSE_SECONDS = 600.0  # at most this long for a start in progress (an image build) to end


class SharedServerError(RuntimeError):
    """The shared server could not be started or reached; the text says why."""


class Handoff:
    """The folder where workers ask for the server and the controller says where it is."""

    WANT = "want"
    READY = "server.json"
    FAILED = "failed.txt"

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    @classmethod
    def create(cls) -> Handoff:
        """A new folder, readable by its owner only (it holds the API key, if any)."""
        return cls(tempfile.mkdtemp(prefix=temp_prefix("shared")))

    def want(self) -> None:
        """Ask for the server (any number of workers may; the first counts). A folder
        that is gone asks nothing: its controller has ended, as ``attach`` says."""
        if self.folder.is_dir():
            (self.folder / self.WANT).touch()

    def wanted(self) -> bool:
        return (self.folder / self.WANT).exists()

    def publish(self, where: dict[str, Any]) -> None:
        self._write(self.READY, json.dumps(where))

    def fail(self, why: str) -> None:
        self._write(self.FAILED, why)

    def _write(self, name: str, text: str) -> None:
        # Written aside and renamed: a reader sees the whole file or none.
        part = self.folder / f".{name}.part"
        part.write_text(text, encoding="utf-8")
        part.replace(self.folder / name)

    def _state(self) -> tuple[str, str]:
        failed = self.folder / self.FAILED
        if failed.exists():
            return "failed", failed.read_text(encoding="utf-8")
        ready = self.folder / self.READY
        if ready.exists():
            return "ready", ready.read_text(encoding="utf-8")
        if not self.folder.is_dir():
            return "failed", f"{self.folder} is gone: the controller has ended"
        return "waiting", f"no {self.READY} in {self.folder} yet"

    def attach(self, timeout: float = 180.0) -> SharedServer:
        """Ask for the server and wait until the controller says where it is (at most
        ``timeout`` s: a first run may build the image); SharedServerError if it could
        not start it, with the controller's reason."""
        self.want()
        try:
            state, text = eventually(self._state, lambda seen: seen[0] != "waiting",
                                     timeout=timeout,
                                     description="the shared server, started by the "
                                                 "xdist controller")
        except WaitTimeout as exc:
            raise SharedServerError(str(exc)) from None
        if state == "failed":
            raise SharedServerError(f"the xdist controller could not start the shared "
                                    f"server:\n{text}")
        return SharedServer(json.loads(text))

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def where(server: Any) -> dict[str, Any]:
    """What a worker needs to reach ``server`` and read its log: its address, key,
    and its container's id or its log file."""
    found: dict[str, Any] = {"host": server.host, "port": server.port,
                             "api_key": server.api_key}
    if hasattr(server, "get_wrapped_container"):
        found["container_id"] = server.get_wrapped_container().id
    elif hasattr(server, "log_path"):
        found["log_path"] = str(server.log_path)
    return found


class SharedServer(HttpEndpoints):
    """The shared server as a worker reaches it: its endpoints, its log, and (for a
    container) what Docker says about it. It cannot be stopped from here."""

    controllable = False
    shared = True

    def __init__(self, where: dict[str, Any]) -> None:
        self.host = where["host"]
        self.port = int(where["port"])
        self.api_key = where.get("api_key")
        self.container_id: str | None = where.get("container_id")
        self.log_path = Path(where["log_path"]) if where.get("log_path") else None

    def get_wrapped_container(self) -> Any:
        """The Docker SDK's container, as inspected now (its client already closed)."""
        from earshot.testing.container import docker_client

        if self.container_id is None:
            raise RuntimeError("the shared server is a local process, not a container")
        with docker_client() as client:
            return client.containers.get(self.container_id)

    def port_bindings(self) -> list[dict[str, str]]:
        """How Docker publishes the server's port, as it reports it."""
        from earshot.testing.container import PORT

        ports = self.get_wrapped_container().attrs["NetworkSettings"]["Ports"]
        return ports.get(f"{PORT}/tcp") or []

    def exec(self, command: str | list[str]) -> tuple[int, bytes]:
        """A command in the container: (exit code, output)."""
        from earshot.testing.container import docker_client

        with docker_client() as client:
            result = client.containers.get(self.container_id).exec_run(command)
        return int(result.exit_code), result.output

    def log_text(self) -> str:
        if self.container_id is not None:
            from earshot.testing.container import docker_client

            with docker_client() as client:
                logs = client.containers.get(self.container_id).logs(stdout=True, stderr=True)
            return logs.decode(errors="replace")
        if self.log_path is not None:
            return self.log_path.read_text(errors="replace")
        return ""


class ServerHost:
    """The controller's side: on the first request in its handoff folder, open the
    server (``open_server()``, a context manager) on a thread of its own and publish
    where it is; ``close()`` stops it and removes the folder."""

    def __init__(self, open_server: Callable[[], AbstractContextManager[Any]]) -> None:
        self.handoff = Handoff.create()
        self._open_server = open_server
        self._owned = ExitStack()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="earshot-shared-server",
                                        daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self.handoff.wanted():
            if self._closing.wait(POLL_SECONDS):
                return
        try:
            server = self._owned.enter_context(self._open_server())
            self.handoff.publish(where(server))
        except BaseException:  # every worker waiting must hear why, not time out
            self.handoff.fail(traceback.format_exc())

    def close(self) -> None:
        """Stop the server (after a start in progress ends) and remove the folder."""
        self._closing.set()
        self._thread.join(CLOSE_SECONDS)
        try:
            if self._thread.is_alive():
                raise SharedServerError(f"the shared server's start did not end within "
                                        f"{CLOSE_SECONDS:g} s")
            self._owned.close()
        finally:
            self.handoff.remove()
