"""Real Chirp servers: cctools' chirp_server and aviary's own."""

from __future__ import annotations

import socket
import sys

from servers._core import LOOPBACK, ServerContext, ServerError, ServerSpec, give_to

__all__ = ["CCTOOLS_CATALOG", "CHIRP_TEST_ACL", "SPECS"]

#: A loopback "catalog" for cctools servers, which otherwise report to the internet.
CCTOOLS_CATALOG = "127.0.0.1:9298"
#: Subject that the default ACL of a test Chirp server grants everything.
CHIRP_TEST_ACL = f"address:{LOOPBACK} rwlda\n"


def _probe_chirp(host: str, port: int, timeout: float) -> None:
    """Log in with the address method and ask whoami: the server really serves."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(b"address\n")
        reply = b""
        while reply.count(b"\n") < 5:
            chunk = s.recv(4096)
            if not chunk:
                raise ServerError(f"chirp server at {host}:{port} closed during login: {reply!r}")
            reply += chunk
        if not reply.startswith(b"yes\nyes\nyes\naddress\n"):
            raise ServerError(f"chirp server at {host}:{port} refused address auth: {reply!r}")


def _prepare_chirp(ctx: ServerContext) -> None:
    (ctx.state / "default.acl").write_text(CHIRP_TEST_ACL)
    (ctx.state / "transient").mkdir()
    give_to(ctx.as_user, ctx.data, ctx.state, ctx.state / "transient", ctx.state / "default.acl")


def _cctools_chirp_command(ctx: ServerContext) -> list[str]:
    argv = [
        "chirp_server",
        "-r", str(ctx.data),
        "-p", str(ctx.port),
        "-I", LOOPBACK,
        "-A", str(ctx.state / "default.acl"),
        "-a", "address",
        # Never report to the catalog servers on the internet (the default).
        "-u", CCTOOLS_CATALOG,
        "-U", "1d",
        "-y", str(ctx.state / "transient"),
        "-B", str(ctx.state / "chirp_server.pid"),
    ]  # fmt: skip
    if ctx.as_user is not None:
        argv += ["-i", ctx.as_user]
    return argv


def _aviary_chirp_command(ctx: ServerContext) -> list[str]:
    argv = [
        sys.executable, "-m", "harness.cli", "serve", "chirp",
        "--root", str(ctx.data),
        "--host", LOOPBACK,
        "--port", str(ctx.port),
        "--default-acl", str(ctx.state / "default.acl"),
        "--auth", "address",
    ]  # fmt: skip
    if ctx.as_user is not None:
        argv += ["--user", ctx.as_user]
    return argv


SPECS = [
    ServerSpec(
        protocol="chirp",
        implementation="cctools",
        programs=("chirp_server",),
        install_hint="apt-get install coop-computing-tools (or run ./setup.sh)",
        command=_cctools_chirp_command,
        probe=_probe_chirp,
        prepare=_prepare_chirp,
        description="cctools' chirp_server (Debian coop-computing-tools)",
    ),
    ServerSpec(
        protocol="chirp",
        implementation="aviary",
        programs=(),
        install_hint="part of aviary",
        command=_aviary_chirp_command,
        probe=_probe_chirp,
        prepare=_prepare_chirp,
        description="aviary serve chirp",
    ),
]
