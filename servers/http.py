"""Real HTTP and WebDAV servers: nginx (autoindex; dav + dav-ext), Python's http.server, wsgidav.

Covers: the ``http/nginx``, ``http/python``, ``dav/wsgidav`` and ``dav/nginx``
specs. Each runs in the foreground on 127.0.0.1 over the fresh data directory,
with every file it writes (pid, temp bodies, logs) under its state directory.

Scenario: as root, nginx's master stays root and its worker runs as the
service account (``user aviary``), owner of the data directory; Python's
http.server and wsgidav are started through ``setpriv`` as that account, with
Debian's ``/usr/bin/python3`` because the venv's interpreter lives under
``/root`` (mode 0700), and the venv's site-packages on PYTHONPATH for wsgidav.

The DAV servers take HTTP Basic ``davuser:davpass`` (nginx from an apr1
htpasswd made with ``openssl passwd -apr1``; wsgidav from ``simple_dc``).
Their differences, which the drivers and the conformance gaps account for, are
in ../shared/references/SERVERS.md: nginx's PROPFIND hides dotfiles and
answers 500 for a directory holding a dangling symlink; wsgidav hides
symlinks and deletes a directory recursively even without the trailing slash.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import sysconfig
from base64 import b64encode
from pathlib import Path

from servers._core import (
    LOOPBACK,
    ServerContext,
    ServerError,
    ServerSpec,
    ServerUnavailable,
    give_to,
)

__all__ = ["DAV_PASSWORD", "DAV_USER", "NGINX_DAV_MODULE", "SPECS"]

DAV_USER = "davuser"
DAV_PASSWORD = "davpass"
NGINX = "nginx"
NGINX_DAV_MODULE = Path("/usr/lib/nginx/modules/ngx_http_dav_ext_module.so")
SYSTEM_PYTHON = "/usr/bin/python3"
NGINX_HINT = "apt-get install nginx libnginx-mod-http-dav-ext (or run ./setup.sh)"
#: nginx looks for these when a directory is asked for; a name no test will create, so
#: that every directory is answered by the autoindex listing, never by a page.
NO_INDEX = "__aviary_no_index_page__"


# -- probes ----------------------------------------------------------------------------------


def _http_status(host: str, port: int, timeout: float, request: bytes) -> int:
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(request)
        reply = b""
        while b"\r\n" not in reply:
            chunk = s.recv(4096)
            if not chunk:
                raise ServerError(f"server at {host}:{port} closed without a reply: {reply!r}")
            reply += chunk
    parts = reply.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise ServerError(f"server at {host}:{port} does not speak HTTP: {reply[:80]!r}")
    return int(parts[1])


def _probe_http(host: str, port: int, timeout: float) -> None:
    request = f"HEAD / HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
    status = _http_status(host, port, timeout, request.encode())
    if status != 200:
        raise ServerError(f"HEAD / gave {status}")


def _probe_dav(host: str, port: int, timeout: float) -> None:
    """An authenticated PROPFIND of the root must give 207: auth and DAV both work."""
    login = b64encode(f"{DAV_USER}:{DAV_PASSWORD}".encode()).decode()
    request = (
        f"PROPFIND / HTTP/1.1\r\nHost: {host}:{port}\r\nDepth: 0\r\n"
        f"Authorization: Basic {login}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    status = _http_status(host, port, timeout, request.encode())
    if status != 207:
        raise ServerError(f"PROPFIND / gave {status}")


# -- nginx -----------------------------------------------------------------------------------


def _nginx_conf(ctx: ServerContext, server_block: str, modules: str = "") -> str:
    state = ctx.state
    user = f"user {ctx.as_user};" if ctx.as_user else ""
    temps = "\n".join(
        f"    {kind}_temp_path {state}/{kind}_temp;"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""{modules}
daemon off;
master_process on;
worker_processes 1;
{user}
pid {state}/nginx.pid;
error_log {state}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
{temps}
    default_type application/octet-stream;
    sendfile on;
    keepalive_timeout 60s;
    server {{
        listen {LOOPBACK}:{ctx.port};
        root {ctx.data};
        charset utf-8;
{server_block}
    }}
}}
"""


def _prepare_nginx_http(ctx: ServerContext) -> None:
    block = f"""        location / {{
            index {NO_INDEX};
            autoindex on;
            autoindex_format json;
        }}"""
    (ctx.state / "nginx.conf").write_text(_nginx_conf(ctx, block))
    give_to(ctx.as_user, ctx.data, ctx.state)


def _prepare_nginx_dav(ctx: ServerContext) -> None:
    if not NGINX_DAV_MODULE.exists():
        # Not a program, so ServerSpec.programs cannot name it (which() wants +x).
        raise ServerUnavailable(f"{NGINX_DAV_MODULE} not found", NGINX_HINT)
    hashed = subprocess.run(
        ["openssl", "passwd", "-apr1", DAV_PASSWORD],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.strip()
    htpasswd = ctx.state / "htpasswd"
    htpasswd.write_text(f"{DAV_USER}:{hashed}\n")
    block = f"""        location / {{
            index {NO_INDEX};
            auth_basic "aviary";
            auth_basic_user_file {htpasswd};
            dav_methods PUT DELETE MKCOL COPY MOVE;
            dav_ext_methods PROPFIND OPTIONS;
            dav_access user:rw group:rw all:r;
            create_full_put_path on;
            client_max_body_size 0;
        }}"""
    modules = f"load_module {NGINX_DAV_MODULE};"
    (ctx.state / "nginx.conf").write_text(_nginx_conf(ctx, block, modules))
    htpasswd.chmod(0o644)  # the worker (the service account) reads it
    give_to(ctx.as_user, ctx.data, ctx.state)


def _nginx_command(ctx: ServerContext) -> list[str]:
    state = str(ctx.state)
    return [NGINX, "-c", f"{state}/nginx.conf", "-p", state, "-e", f"{state}/error.log"]


# -- Python's http.server and wsgidav ---------------------------------------------------------


def _as_service_user(ctx: ServerContext, argv: list[str]) -> list[str]:
    if ctx.as_user is None:
        return argv
    user = ctx.as_user
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", *argv]


def _python_for(ctx: ServerContext) -> str:
    """An interpreter the server's account can run (the venv's may be under /root)."""
    return SYSTEM_PYTHON if ctx.as_user is not None else sys.executable


def _prepare_python_http(ctx: ServerContext) -> None:
    give_to(ctx.as_user, ctx.data, ctx.state)


def _python_http_command(ctx: ServerContext) -> list[str]:
    argv = [
        _python_for(ctx), "-m", "http.server",
        "--bind", LOOPBACK,
        "--directory", str(ctx.data),
        str(ctx.port),
    ]  # fmt: skip
    return _as_service_user(ctx, argv)


def _prepare_wsgidav(ctx: ServerContext) -> None:
    config = f"""host: {LOOPBACK}
port: {ctx.port}
verbose: 1
provider_mapping:
  "/": "{ctx.data}"
http_authenticator:
  accept_basic: true
  accept_digest: false
  default_to_digest: false
simple_dc:
  user_mapping:
    "*":
      "{DAV_USER}":
        password: "{DAV_PASSWORD}"
dir_browser:
  enable: false
lock_storage: true
"""
    (ctx.state / "wsgidav.yaml").write_text(config)
    give_to(ctx.as_user, ctx.data, ctx.state, ctx.state / "wsgidav.yaml")


def _wsgidav_command(ctx: ServerContext) -> list[str]:
    argv = [
        _python_for(ctx), "-m", "wsgidav.server.server_cli",
        "-c", str(ctx.state / "wsgidav.yaml"),
    ]  # fmt: skip
    if ctx.as_user is not None:
        # Debian's python with the venv's packages (same 3.11 ABI): see the module docstring.
        site = sysconfig.get_paths()["purelib"]
        argv = ["env", f"PYTHONPATH={site}", *argv]
    return _as_service_user(ctx, argv)


def _root_tools() -> tuple[str, ...]:
    return ("setpriv", SYSTEM_PYTHON) if os.geteuid() == 0 else ()


def _nginx_programs(*extra: str) -> tuple[str, ...]:
    found = shutil.which(NGINX) or f"/usr/sbin/{NGINX}"
    return (found, *extra)


SPECS = [
    ServerSpec(
        protocol="http",
        implementation="nginx",
        programs=_nginx_programs(),
        install_hint=NGINX_HINT,
        command=_nginx_command,
        probe=_probe_http,
        prepare=_prepare_nginx_http,
        description="nginx 1.22 (Debian), autoindex in JSON format",
    ),
    ServerSpec(
        protocol="http",
        implementation="python",
        programs=_root_tools(),
        install_hint="part of Python (python3 -m http.server)",
        command=_python_http_command,
        probe=_probe_http,
        prepare=_prepare_python_http,
        description="Python's http.server: HTML listings, no Range support",
    ),
    ServerSpec(
        protocol="dav",
        implementation="wsgidav",
        programs=_root_tools(),
        install_hint="pip install wsgidav cheroot (part of aviary's venv)",
        command=_wsgidav_command,
        probe=_probe_dav,
        prepare=_prepare_wsgidav,
        description="WsgiDAV 4.x on cheroot (PyPI), HTTP Basic",
        user=DAV_USER,
        password=DAV_PASSWORD,
    ),
    ServerSpec(
        protocol="dav",
        implementation="nginx",
        programs=_nginx_programs("openssl"),
        install_hint=NGINX_HINT,
        command=_nginx_command,
        probe=_probe_dav,
        prepare=_prepare_nginx_dav,
        description="nginx 1.22 (Debian) with dav and dav-ext, HTTP Basic (apr1)",
        user=DAV_USER,
        password=DAV_PASSWORD,
    ),
]
