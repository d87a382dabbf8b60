"""``aviary serve chirp`` (aviary's Chirp server) and ``aviary servers`` (which real servers this machine can start)."""

from __future__ import annotations

import argparse
import logging
import os
import pwd
import signal
import sys
import typing
from pathlib import Path
from types import FrameType

if typing.TYPE_CHECKING:
    pass


def add_serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser("serve", help="serve a directory over a protocol")
    protocols = serve.add_subparsers(dest="protocol", required=True, metavar="PROTOCOL")
    chirp = protocols.add_parser(
        "chirp", help="aviary's Chirp server (wire-compatible with cctools)"
    )
    chirp.add_argument("--root", required=True, type=Path, help="directory to export")
    chirp.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    chirp.add_argument(
        "--port", type=int, default=9094, help="port (default 9094; 0 picks a free one)"
    )
    chirp.add_argument(
        "--auth",
        default="unix,hostname,address",
        help="comma-separated auth methods to accept (default unix,hostname,address)",
    )
    chirp.add_argument(
        "--default-acl", type=Path, help="ACL file for directories without one (like -A)"
    )
    chirp.add_argument(
        "--inherit-default-acl",
        action="store_true",
        help="directories without an ACL inherit their parent's",
    )
    chirp.add_argument(
        "--idle-timeout", type=float, default=60.0, help="seconds before an idle client is dropped"
    )
    chirp.add_argument(
        "--umask",
        type=lambda s: int(s, 8),
        default=0o077,
        help="umask for new files, octal (default 077, as cctools)",
    )
    chirp.add_argument("--read-only", action="store_true", help="refuse every change")
    chirp.add_argument(
        "--user", help="when started as root, serve as this user after binding the port"
    )
    chirp.add_argument(
        "--port-file", type=Path, help="write the bound port to this file once listening"
    )
    chirp.add_argument("--debug", action="store_true", help="log every request to stderr")


def _drop_privileges(user: str) -> None:
    entry = pwd.getpwnam(user)
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)


def run_serve(args: argparse.Namespace) -> int:
    from chirp_server import ChirpServer, ChirpServerConfig

    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    if not args.root.is_dir():
        print(f"aviary: serve chirp: --root {args.root}: not a directory", file=sys.stderr)
        return 2
    if args.user and os.geteuid() != 0:
        print("aviary: serve chirp: --user needs root", file=sys.stderr)
        return 2
    if args.user:
        try:
            pwd.getpwnam(args.user)
        except KeyError:
            print(f"aviary: serve chirp: no such user {args.user!r}", file=sys.stderr)
            return 2
    methods = tuple(m.strip() for m in args.auth.split(",") if m.strip())
    try:
        config = ChirpServerConfig(
            root=args.root.resolve(),
            host=args.host,
            port=args.port,
            auth_methods=methods,
            default_acl=args.default_acl.resolve() if args.default_acl else None,
            inherit_default_acl=args.inherit_default_acl,
            idle_timeout=args.idle_timeout,
            umask=args.umask,
            read_only=args.read_only,
        )
        server = ChirpServer(config)
        port = server.start()
    except (OSError, ValueError) as exc:
        print(f"aviary: serve chirp: {exc}", file=sys.stderr)
        return 1
    if args.user:
        _drop_privileges(args.user)

    def stop(signum: int, frame: FrameType | None) -> None:
        server.shutdown()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.port_file:
        args.port_file.write_text(f"{port}\n")
    print(
        f"aviary chirp server on {args.host}:{port}, root {config.root}",
        file=sys.stderr,
        flush=True,
    )
    server.serve_forever()
    return 0


def add_servers_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sub.add_parser("servers", help="list the real servers aviary can start here")


def run_servers(args: argparse.Namespace) -> int:
    from servers import SERVERS

    for key, spec in sorted(SERVERS.items()):
        missing = spec.missing_programs()
        status = (
            "available" if not missing else f"missing {', '.join(missing)}: {spec.install_hint}"
        )
        print(f"{key:20} {status}")
    return 0
