"""A real XRootD server: Debian xrootd-server's ``xrootd`` with a private config.

Covers: ``root/xrootd``, the data server alone (no cmsd, no redirector),
anonymous and read-write, exporting the data directory as "/".

Scenario: ``prepare`` writes ``STATE/xrootd.cfg`` (``all.export /``,
``oss.localroot DATADIR``, ``xrd.port PORT``, admin and pid paths under STATE,
``xrd.network nodnr`` so that it never asks DNS for reverse names) and gives the
data and state directories to the service user; the command runs
``xrootd -c STATE/xrootd.cfg -l STATE/xrootd.log -I v4 -R USER``: as root,
``-R`` drops to the unprivileged account ``aviary``.

xrootd cannot bind to 127.0.0.1 alone: it listens on 0.0.0.0:PORT (``-I v4``
only chooses IPv4). Every client here connects to 127.0.0.1, so the traffic
stays on loopback. The probe is an XRootD handshake (the 20-byte initial
handshake of the protocol, answered by a 16-byte server reply), not just a TCP
connect, so the server is known to speak the protocol when the probe passes.
"""

from __future__ import annotations

import socket
import struct

from servers._core import ServerContext, ServerError, ServerSpec, give_to

__all__ = ["SPECS", "XROOTD"]

XROOTD = "xrootd"
#: The client's initial handshake: four zero ints, then 4 and 2012 (XProtocol.hh).
_HANDSHAKE = struct.pack(">iiiii", 0, 0, 0, 4, 2012)


def _probe_xrootd(host: str, port: int, timeout: float) -> None:
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(_HANDSHAKE)
        reply = b""
        while len(reply) < 16:
            chunk = s.recv(16 - len(reply))
            if not chunk:
                raise ServerError(f"xrootd at {host}:{port} closed during the handshake")
            reply += chunk
        # streamid(2) status(2) dlen(4) protover(4) msgval(4): status 0 is kXR_ok.
        _, status, length = struct.unpack(">HHi", reply[:8])
        if status != 0 or length != 8:
            raise ServerError(f"xrootd at {host}:{port} answered the handshake with {reply!r}")


def _prepare_xrootd(ctx: ServerContext) -> None:
    admin = ctx.state / "admin"
    admin.mkdir()
    config = f"""\
all.export /
oss.localroot {ctx.data}
xrd.port {ctx.port}
all.adminpath {admin}
all.pidpath {ctx.state}
xrd.network nodnr
"""
    (ctx.state / "xrootd.cfg").write_text(config)
    give_to(ctx.as_user, ctx.data, ctx.state, admin)


def _xrootd_command(ctx: ServerContext) -> list[str]:
    argv = [
        XROOTD,
        "-c", str(ctx.state / "xrootd.cfg"),
        "-l", str(ctx.state / "xrootd.log"),
        "-I", "v4",
    ]  # fmt: skip
    if ctx.as_user is not None:
        argv += ["-R", ctx.as_user]
    return argv


SPECS = [
    ServerSpec(
        protocol="root",
        implementation="xrootd",
        programs=(XROOTD,),
        install_hint="apt-get install xrootd-server (or run ./setup.sh)",
        command=_xrootd_command,
        probe=_probe_xrootd,
        prepare=_prepare_xrootd,
        description="Debian xrootd-server, anonymous read-write, data directory exported as /",
    ),
]
