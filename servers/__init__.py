"""Real servers for the tests and benchmarks: each started on a free loopback port.

Every kind of server is a :class:`ServerSpec` in :data:`SERVERS`, keyed
``"protocol/implementation"`` and declared in one module per protocol
(``servers.chirp``, ``servers.ftp``, ...); ``servers.containers`` runs the same
specs inside Docker. The core (start, readiness probe, stop by PID) is ``_core``.
"""

from servers._core import (
    LOOPBACK,
    SERVERS,
    SERVICE_USER,
    RunningServer,
    ServerContext,
    ServerError,
    ServerHandle,
    ServerSpec,
    ServerUnavailable,
    child_pids,
    free_port,
    give_to,
    pid_alive,
    running_server,
    start_server,
)

__all__ = [
    "LOOPBACK",
    "SERVERS",
    "SERVICE_USER",
    "RunningServer",
    "ServerContext",
    "ServerError",
    "ServerHandle",
    "ServerSpec",
    "ServerUnavailable",
    "child_pids",
    "free_port",
    "give_to",
    "pid_alive",
    "running_server",
    "start_server",
]
