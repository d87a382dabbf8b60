"""Real servers in containers, for machines that have a Docker engine (hosted CI runners).

The same :class:`~servers.ServerSpec` command line runs inside a
container of the spec's ``image`` (its ``image_setup`` installs the server
first), with host networking so that it listens on 127.0.0.1 as a native one
does, and with the server's private directory bind-mounted at the same path.
The container is removed when the server stops. Machines without an engine
(these development machines) keep the native backend, which is the default.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from servers._core import (
    LOOPBACK,
    SERVERS,
    START_TIMEOUT,
    ServerContext,
    ServerError,
    ServerUnavailable,
    free_port,
)

__all__ = ["ContainerServer", "docker_client", "start_in_container"]


def docker_client() -> Any:
    """A docker SDK client, or ServerUnavailable saying why there is none."""
    try:
        import docker

        client = docker.from_env(timeout=10)
        client.ping()
        return client
    except Exception as exc:  # the SDK raises many kinds; all mean "no engine here"
        raise ServerUnavailable(
            f"no Docker engine reachable ({type(exc).__name__})", "use --server-backend native"
        ) from None


class ContainerServer:
    """A server running in a container: the same surface the tests use on RunningServer."""

    def __init__(self, key: str, container: Any, base: Path, port: int) -> None:
        self.spec = SERVERS[key]
        self.container = container
        self.base, self.data_dir, self.state_dir = base, base / "data", base / "state"
        self.host, self.port = LOOPBACK, port
        self.as_user: str | None = None
        self.client_env: dict[str, str] = {}

    def url(self, path: str = "/") -> str:
        return f"{self.spec.protocol}://{self.host}:{self.port}/{path.lstrip('/')}"

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.container.remove(force=True)
        shutil.rmtree(self.base, ignore_errors=True)


def start_in_container(key: str, timeout: float = START_TIMEOUT * 20) -> ContainerServer:
    """Start server ``key`` in a container of its image.

    Raises:
        ServerUnavailable: no engine, or the spec names no image.
        ServerError: it did not answer in time.
    """
    spec = SERVERS[key]
    if spec.image is None:
        raise ServerUnavailable(f"{key} has no container image", "use --server-backend native")
    client = docker_client()
    base = Path(tempfile.mkdtemp(prefix=f"aviary-{spec.protocol}-{spec.implementation}-"))
    base.chmod(0o711)
    ctx = ServerContext(
        base=base, data=base / "data", state=base / "state", port=free_port(), as_user=None
    )
    ctx.data.mkdir()
    ctx.state.mkdir()
    spec.prepare(ctx)
    command = " ".join(f"'{word}'" for word in spec.command(ctx))
    script = f"{spec.image_setup} && exec {command}" if spec.image_setup else f"exec {command}"
    container = client.containers.run(
        spec.image,
        ["sh", "-c", script],
        detach=True,
        network_mode="host",
        volumes={str(base): {"bind": str(base), "mode": "rw"}},
        working_dir=str(ctx.state),
    )
    server = ContainerServer(key, container, base, ctx.port)
    deadline = time.monotonic() + timeout
    while True:
        try:
            spec.probe(LOOPBACK, ctx.port, 2.0)
            return server
        except (OSError, ServerError) as exc:
            container.reload()
            if container.status == "exited" or time.monotonic() > deadline:
                logs = container.logs(tail=20).decode(errors="replace")
                server.stop()
                raise ServerError(f"{key} in {spec.image} did not answer: {exc}; {logs}") from None
            time.sleep(0.5)
