"""Chirp: cctools' remote I/O protocol, the client driver.

The wire vocabulary is in ``codec`` (public: aviary's Chirp server in
``chirp_server`` speaks the same words), the sans-I/O client state machine in
``_events``/``_connection``, the blocking I/O shell (connections, deadlines,
recovery) in ``_shell`` with its decisions in ``_recovery``, and the driver
interface in ``_driver``.
"""

from drivers.chirp._driver import REPLY_REUSE_SECONDS, ChirpDriver

__all__ = ["REPLY_REUSE_SECONDS", "ChirpDriver"]
