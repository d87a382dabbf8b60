"""A real SFTP server: a private OpenSSH sshd on a loopback port.

Covers: ``sftp/openssh``, Debian openssh-server's ``/usr/sbin/sshd`` run in the
foreground (``-D -e``) with a config of its own in STATE, never the system's
sshd or its keys.

Scenario: ``prepare`` makes a fresh host key and a client key with
``ssh-keygen`` (ed25519: milliseconds), an ``authorized_keys`` holding the
client key, a ``known_hosts`` line for ``[127.0.0.1]:PORT``, and the config:
key authentication only, ``UsePAM no``, ``StrictModes no``, no forwarding, no
TTY, and ``ForceCommand internal-sftp`` (sshd's built-in sftp-server, so the
login runs no shell and needs no binary in the chroot).

Why the login is root, inside a chroot. The URL's "/" must be the data
directory. SFTP paths are absolute on the server, so only ``ChrootDirectory``
can make the data directory the visible root; sshd insists that the chroot
directory and every component of its path be root-owned and not writable by
group or others, and so the chroot's top is never writable by an unprivileged
login such as ``aviary``. The data directory lives under ``/tmp`` (mode 1777),
which fails that check, so sshd is pointed at a root-owned symlink
``/run/aviary-sftp/<name>`` to it: sshd stat()s through the link and never
sees ``/tmp`` as a component. The session therefore runs as root in the
chroot (key-only, loopback-only, this one server); files come out root-owned,
as they do for the local oracle the conformance suite runs as root. Stale links
left by servers that are gone are removed when the next one is prepared.

``client_env`` gives the driver ``AVIARY_SFTP_IDENTITY`` (the client key) and
``AVIARY_SFTP_KNOWN_HOSTS`` (the host key line): nothing is accepted blindly.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
from pathlib import Path

from servers._core import LOOPBACK, ServerContext, ServerError, ServerSpec

__all__ = ["CHROOT_LINKS", "SPECS", "SSHD", "SSH_KEYGEN"]

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = "ssh-keygen"
#: Root-owned directory of links to data directories (see the module docstring).
CHROOT_LINKS = Path("/run/aviary-sftp")
#: sshd's privilege-separation directory; Debian makes it at service start, which we skip.
PRIVSEP_DIR = Path("/run/sshd")
LOGIN_USER = "root"
IDENTITY_ENV = "AVIARY_SFTP_IDENTITY"
KNOWN_HOSTS_ENV = "AVIARY_SFTP_KNOWN_HOSTS"


def _probe_ssh(host: str, port: int, timeout: float) -> None:
    """The server sends its SSH banner: it is listening and serving."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        banner = s.recv(256)
        if not banner.startswith(b"SSH-2.0-"):
            raise ServerError(f"sshd at {host}:{port} sent no SSH banner: {banner!r}")


def _keygen(path: Path, comment: str) -> str:
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
        timeout=30,
    )
    return path.with_suffix(".pub").read_text().strip()


def _chroot_link(ctx: ServerContext) -> Path:
    return CHROOT_LINKS / ctx.base.name


def _remove_stale_links() -> None:
    for link in CHROOT_LINKS.iterdir():
        if link.is_symlink() and not link.exists():
            with contextlib.suppress(OSError):
                link.unlink()


def _prepare_sshd(ctx: ServerContext) -> None:
    for directory in (CHROOT_LINKS, PRIVSEP_DIR):
        directory.mkdir(mode=0o755, exist_ok=True)
    _remove_stale_links()
    # sshd refuses a chroot that is not root-owned 0755 (or stricter).
    ctx.data.chmod(0o755)
    link = _chroot_link(ctx)
    with contextlib.suppress(FileNotFoundError):
        link.unlink()
    link.symlink_to(ctx.data)
    host_key = _keygen(ctx.state / "host_key", "aviary-test-host")
    client_key = _keygen(ctx.state / "client_key", "aviary-test-client")
    (ctx.state / "authorized_keys").write_text(client_key + "\n")
    key_type, key_data = host_key.split()[:2]
    (ctx.state / "known_hosts").write_text(f"[{LOOPBACK}]:{ctx.port} {key_type} {key_data}\n")
    config = f"""\
ListenAddress {LOOPBACK}
Port {ctx.port}
HostKey {ctx.state / "host_key"}
PidFile {ctx.state / "sshd.pid"}
AuthorizedKeysFile {ctx.state / "authorized_keys"}
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowUsers {LOGIN_USER}
UsePAM no
StrictModes no
UseDNS no
PermitTTY no
AllowTcpForwarding no
AllowAgentForwarding no
X11Forwarding no
PermitUserRC no
MaxStartups 100
LogLevel VERBOSE
Subsystem sftp internal-sftp -u 022
ForceCommand internal-sftp -u 022
ChrootDirectory {link}
"""
    (ctx.state / "sshd_config").write_text(config)


def _sshd_command(ctx: ServerContext) -> list[str]:
    # sshd must be started by its absolute path (it re-executes itself per connection).
    return [SSHD, "-D", "-e", "-f", str(ctx.state / "sshd_config")]


def _client_env(ctx: ServerContext) -> dict[str, str]:
    return {
        IDENTITY_ENV: str(ctx.state / "client_key"),
        KNOWN_HOSTS_ENV: str(ctx.state / "known_hosts"),
    }


SPECS = [
    ServerSpec(
        protocol="sftp",
        implementation="openssh",
        programs=(SSHD, SSH_KEYGEN),
        install_hint="apt-get install openssh-server openssh-client (or run ./setup.sh)",
        command=_sshd_command,
        probe=_probe_ssh,
        prepare=_prepare_sshd,
        description="OpenSSH sshd with internal-sftp, chrooted to the data directory",
        user=LOGIN_USER,
        client_env=_client_env,
        needs_root=True,
    ),
]
