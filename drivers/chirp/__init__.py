"""Chirp: cctools' remote I/O protocol, client driver and server.

The wire vocabulary is in ``_codec``, the sans-I/O client state machine in
``_events``/``_connection``, the blocking I/O shell (connections, deadlines,
recovery) in ``_shell`` with its decisions in ``_recovery``, the driver
interface in ``_driver``, and aviary's own server in ``_server``.
"""

from drivers.chirp._driver import ChirpDriver
from drivers.chirp._server import ChirpServer, ChirpServerConfig

__all__ = ["ChirpDriver", "ChirpServer", "ChirpServerConfig"]
