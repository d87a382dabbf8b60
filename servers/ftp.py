"""Real FTP servers: vsftpd, proftpd, pure-ftpd and pyftpdlib, each on a loopback port.

Covers: the four FTP daemons of the conformance tables, each serving its data
directory as the FTP root of one login (``ftptest``, password
:data:`FTP_PASSWORD`), chrooted there and writable by that login's uid.

Scenario: ``setup/ftp.sh`` made the system account ``ftptest`` (vsftpd logs it
in through PAM; the others map a virtual user of the same name onto its uid and
gid) and unpacked proftpd and pure-ftpd under ``/opt/aviary/servers``, because
the three Debian FTP daemons conflict in apt. Each server gets a private
config in ``state/``, a passive port range of its own, and 127.0.0.1 for
both control and data connections. See ../shared/references/SERVERS.md for the
verified recipes these follow, and the gotchas each works around.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import BinaryIO

from servers._core import LOOPBACK, ServerContext, ServerError, ServerSpec, ServerUnavailable

__all__ = ["FTP_PASSWORD", "FTP_USER", "SPECS", "passive_range"]

#: The login of every test server: a system account for vsftpd, a virtual user elsewhere.
FTP_USER = "ftptest"
#: Its password; setup/ftp.sh sets the same for the system account.
FTP_PASSWORD = "aviary-ftp"
SERVERS_DIR = Path("/opt/aviary/servers")
PROFTPD = SERVERS_DIR / "proftpd/usr/sbin/proftpd"
PURE_FTPD = SERVERS_DIR / "pure-ftpd/usr/sbin/pure-ftpd"
PURE_PW = SERVERS_DIR / "pure-ftpd/usr/bin/pure-pw"
PASSIVE_PORTS = 40  # passive data ports per server
PASSIVE_BASE = 40000  # lowest passive port
SETUP_HINT = (
    "run ./setup.sh as root (setup/ftp.sh makes the ftptest account and unpacks the servers)"
)


def passive_range(control_port: int) -> tuple[int, int]:
    """A passive port range derived from the control port, so two servers rarely share one."""
    low = PASSIVE_BASE + (control_port % 500) * PASSIVE_PORTS
    return low, low + PASSIVE_PORTS - 1


def _probe_ftp(host: str, port: int, timeout: float) -> None:
    """Log in as the test user: the server answers and its authentication works."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        reader = s.makefile("rb")
        try:
            _expect(reader, "2", "greeting")
            s.sendall(f"USER {FTP_USER}\r\n".encode())
            _expect(reader, "3", "USER")
            s.sendall(f"PASS {FTP_PASSWORD}\r\n".encode())
            _expect(reader, "2", "PASS")
            s.sendall(b"QUIT\r\n")
        finally:
            reader.close()


def _expect(reader: BinaryIO, first_digit: str, what: str) -> None:
    """Read one (possibly multi-line) reply; its code must start with ``first_digit``."""
    line = reader.readline(4096)
    # A multi-line reply ("NNN-...") ends with a line "NNN " carrying the same code.
    while line[3:4] == b"-" or not line[:3].isdigit():
        if not line:
            raise ServerError(f"FTP {what}: connection closed")
        code, line = line[:3], reader.readline(4096)
        if line[:3] == code and line[3:4] == b" ":
            break
    if not line.startswith(first_digit.encode()):
        raise ServerError(f"FTP {what}: unexpected reply {line!r}")


def _account() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(FTP_USER)
    except KeyError:
        raise ServerUnavailable(f"system account {FTP_USER!r} is missing", SETUP_HINT) from None


def _own_data(ctx: ServerContext) -> pwd.struct_passwd | None:
    """Give the data directory to the login's uid (when root), and return its account."""
    if os.geteuid() != 0:
        return None
    account = _account()
    os.chown(ctx.data, account.pw_uid, account.pw_gid)
    return account


def _sha512_crypt(password: str) -> str:
    done = subprocess.run(
        ["openssl", "passwd", "-6", "-stdin"],
        input=password,
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    )
    return done.stdout.strip()


# -- vsftpd ------------------------------------------------------------------------------------


def _prepare_vsftpd(ctx: ServerContext) -> None:
    _own_data(ctx)
    empty = ctx.state / "empty"  # secure_chroot_dir: root-owned, not writable
    empty.mkdir(mode=0o755)
    (ctx.state / "user_list").write_text(f"{FTP_USER}\n")
    low, high = passive_range(ctx.port)
    settings = {
        "listen": "YES",
        "listen_ipv6": "NO",
        "listen_address": LOOPBACK,
        "listen_port": ctx.port,
        "background": "NO",
        "anonymous_enable": "NO",
        "local_enable": "YES",
        "write_enable": "YES",
        "local_umask": "022",
        "file_open_mode": "0666",
        "chroot_local_user": "YES",
        "allow_writeable_chroot": "YES",
        "local_root": ctx.data,
        "pam_service_name": "vsftpd",
        "userlist_enable": "YES",
        "userlist_deny": "NO",
        "userlist_file": ctx.state / "user_list",
        "pasv_enable": "YES",
        "pasv_address": LOOPBACK,
        "pasv_min_port": low,
        "pasv_max_port": high,
        "connect_from_port_20": "NO",
        # vsftpd's seccomp sandbox kills the session on syscalls newer than itself.
        "seccomp_sandbox": "NO",
        "secure_chroot_dir": empty,
        "xferlog_enable": "NO",
        "vsftpd_log_file": ctx.state / "vsftpd.log",
        "hide_ids": "NO",
        "ftpd_banner": "aviary vsftpd",
        "max_per_ip": "0",
    }
    text = "".join(f"{key}={value}\n" for key, value in settings.items())
    (ctx.state / "vsftpd.conf").write_text(text)


def _vsftpd_command(ctx: ServerContext) -> list[str]:
    # vsftpd writes its start-up errors ("500 OOPS") to fd 0: give it a log there.
    conf, log = ctx.state / "vsftpd.conf", ctx.state / "err.log"
    return ["sh", "-c", f'exec vsftpd "{conf}" 0<>"{log}"']


# -- proftpd -----------------------------------------------------------------------------------


def _prepare_proftpd(ctx: ServerContext) -> None:
    account = _own_data(ctx) or _account()
    low, high = passive_range(ctx.port)
    passwd = ctx.state / "ftpd.passwd"
    passwd.write_text(
        f"{FTP_USER}:{_sha512_crypt(FTP_PASSWORD)}:{account.pw_uid}:{account.pw_gid}"
        f"::{ctx.data}:/bin/sh\n"
    )
    group = ctx.state / "ftpd.group"
    group.write_text(f"{FTP_USER}:x:{account.pw_gid}:{FTP_USER}\n")
    for path in (passwd, group):  # proftpd refuses world-readable auth files
        path.chmod(0o600)
    (ctx.state / "proftpd.conf").write_text(
        f"""ServerType standalone
ServerName "aviary proftpd"
DefaultAddress {LOOPBACK}
SocketBindTight on
UseIPv6 off
Port {ctx.port}
PassivePorts {low} {high}
User {FTP_USER}
Group {FTP_USER}
AuthOrder mod_auth_file.c
AuthUserFile {passwd}
AuthGroupFile {group}
RequireValidShell off
DefaultRoot ~
PidFile {ctx.state}/proftpd.pid
ScoreboardFile {ctx.state}/proftpd.scoreboard
DelayTable none
DelayEngine off
WtmpLog off
UseReverseDNS off
TransferLog none
SystemLog {ctx.state}/proftpd.log
Umask 022 022
AllowOverwrite on
AllowStoreRestart on
AllowRetrieveRestart on
ListOptions "-a"
ShowSymlinks on
MaxInstances 64
"""
    )


def _proftpd_command(ctx: ServerContext) -> list[str]:
    return [str(PROFTPD), "-n", "-q", "-c", str(ctx.state / "proftpd.conf")]


# -- pure-ftpd ---------------------------------------------------------------------------------


def _prepare_pure_ftpd(ctx: ServerContext) -> None:
    account = _own_data(ctx) or _account()
    passwd = ctx.state / "pureftpd.passwd"
    # account:hash:uid:gid:gecos:home/./ (chroot there):then 12 empty limit fields.
    passwd.write_text(
        f"{FTP_USER}:{_sha512_crypt(FTP_PASSWORD)}:{account.pw_uid}:{account.pw_gid}"
        f"::{ctx.data}/./" + ":" * 12 + "\n"
    )
    passwd.chmod(0o600)
    subprocess.run(
        [str(PURE_PW), "mkdb", str(ctx.state / "pureftpd.pdb"), "-f", str(passwd)],
        check=True,
        capture_output=True,
        timeout=30,
    )


def _pure_ftpd_command(ctx: ServerContext) -> list[str]:
    low, high = passive_range(ctx.port)
    return [
        str(PURE_FTPD),
        "-S", f"{LOOPBACK},{ctx.port}",
        "-l", f"puredb:{ctx.state / 'pureftpd.pdb'}",
        "-E",  # no anonymous logins
        "-A",  # chroot everyone
        "-H",  # no reverse DNS
        "-D",  # list dotfiles, as the other servers do
        "-p", f"{low}:{high}",
        "-P", LOOPBACK,
        "-U", "133:022",  # files 0644, directories 0755, as elsewhere
    ]  # fmt: skip


# -- pyftpdlib ---------------------------------------------------------------------------------


def _prepare_pyftpdlib(ctx: ServerContext) -> None:
    _own_data(ctx)


def _pyftpdlib_command(ctx: ServerContext) -> list[str]:
    low, high = passive_range(ctx.port)
    argv = [
        sys.executable, "-m", "pyftpdlib",
        "-i", LOOPBACK,
        "-p", str(ctx.port),
        "-d", str(ctx.data),
        "-w",
        "-u", FTP_USER,
        "-P", FTP_PASSWORD,
        "-r", f"{low}-{high}",
    ]  # fmt: skip
    if os.geteuid() == 0:
        # Files must belong to the login's uid, as with the other servers.
        argv = ["setpriv", f"--reuid={FTP_USER}", f"--regid={FTP_USER}", "--clear-groups", *argv]
    return argv


def _needs_setpriv() -> tuple[str, ...]:
    return ("setpriv",) if os.geteuid() == 0 and shutil.which("setpriv") else ()


SPECS = [
    ServerSpec(
        protocol="ftp",
        implementation="vsftpd",
        programs=("vsftpd",),
        install_hint="apt-get install vsftpd, then ./setup.sh as root for the ftptest account",
        command=_vsftpd_command,
        probe=_probe_ftp,
        prepare=_prepare_vsftpd,
        description="vsftpd 3.0.3 (Debian), a system account through PAM, chroot local_root",
        user=FTP_USER,
        password=FTP_PASSWORD,
        needs_root=True,
    ),
    ServerSpec(
        protocol="ftp",
        implementation="proftpd",
        programs=(str(PROFTPD),),
        install_hint=SETUP_HINT,
        command=_proftpd_command,
        probe=_probe_ftp,
        prepare=_prepare_proftpd,
        description="proftpd 1.3.8 (Debian proftpd-core, unpacked), AuthUserFile, DefaultRoot",
        user=FTP_USER,
        password=FTP_PASSWORD,
        needs_root=True,
    ),
    ServerSpec(
        protocol="ftp",
        implementation="pure-ftpd",
        programs=(str(PURE_FTPD), str(PURE_PW)),
        install_hint=SETUP_HINT,
        command=_pure_ftpd_command,
        probe=_probe_ftp,
        prepare=_prepare_pure_ftpd,
        description="pure-ftpd 1.0.50 (Debian, unpacked), a puredb virtual user, chroot",
        user=FTP_USER,
        password=FTP_PASSWORD,
        needs_root=True,
    ),
    ServerSpec(
        protocol="ftp",
        implementation="pyftpdlib",
        programs=_needs_setpriv(),
        install_hint="pip install pyftpdlib (part of aviary's venv)",
        command=_pyftpdlib_command,
        probe=_probe_ftp,
        prepare=_prepare_pyftpdlib,
        description="pyftpdlib 2.x (PyPI), run as ftptest when started by root",
        user=FTP_USER,
        password=FTP_PASSWORD,
    ),
]
