"""aviary's Chirp server, wire-compatible with cctools' ``chirp_server`` (``aviary serve chirp``).

``_server`` accepts connections and authenticates; ``_verbs`` parses a request
line into a call; ``_handlers`` carries it out on ``_fs``, the confined export
directory, checking ``_acl``, the per-directory access lists. The words on the
wire come from the client's codec (``drivers.chirp.codec``), so both sides
share one vocabulary.
"""

from chirp_server._server import ChirpServer, ChirpServerConfig

__all__ = ["ChirpServer", "ChirpServerConfig"]
