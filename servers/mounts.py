"""FUSE clients mounted over the real servers: the tools users pick instead of an agent.

The conformance suite's ``--through mount --mount rclone`` starts the driver's
real server as usual, mounts it with Debian's ``rclone mount`` (FTP, SFTP,
WebDAV) or ``sshfs`` (SFTP) on a temporary directory, and runs the same
properties on that directory through the local driver and the syscall program:
the tools users pick instead of an agent, tested on the same servers by the
same oracle; the remote micro benchmark mounts them the same way, beside the
agent. ``--mount PATH`` takes a directory someone else mounted and tests it as is.

Every mount is made on a directory this process created, by a client process
it started; it is unmounted by its path (``fusermount -u``, lazily if busy) and
its client stopped by PID, on failure too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from drivers import Capabilities, Driver
from drivers.local import LocalDriver
from servers import ServerHandle, ServerUnavailable

__all__ = ["MOUNTERS", "Mounted", "mount_capabilities", "mount_way_name", "start_mount"]

#: FUSE clients the suite can mount over a driver's server: name -> protocols they speak.
MOUNTERS: dict[str, tuple[str, ...]] = {
    "rclone": ("ftp", "sftp", "dav"),
    "sshfs": ("sftp",),
}
MOUNT_TIMEOUT = 20.0  # seconds a FUSE client may take to show its mount
UNMOUNT_TIMEOUT = 10.0  # seconds a FUSE client may take to exit once unmounted


def mount_capabilities(mount: str, server: Capabilities) -> Capabilities:
    """What a FUSE client promises over a server whose driver promises ``server``.

    rclone (``--vfs-cache-mode writes``) is a file system of its own: POSIX-consistent
    through the mount (its cache holds the writes), without links, modes or link counts,
    and with its VFS's own limits; the server still decides names and times. sshfs
    carries SFTP's promises, but for hard links: it numbers each path as an inode of its
    own, so the kernel keeps one name's attributes (size, times) for up to a second after
    a change made through another name of the file. A directory mounted by someone else:
    POSIX.
    """
    if mount == "sshfs":
        return dataclasses.replace(server, hard_links=False)
    if mount != "rclone":
        return Capabilities()
    return dataclasses.replace(
        Capabilities(),
        symlinks=False,
        hard_links=False,
        chmod=False,
        create_modes=False,  # files 0644, directories 0755
        link_counts=False,
        rename_over_directory=False,  # EEXIST
        unlink_while_open=False,
        truncate_by_path=False,
        create_read_only=False,
        rename_directories=False,
        utimens=server.utimens,  # without it (WebDAV, vsftpd): success, then 1999-09-04
        utimens_directories=server.utimens_directories,
        time_resolution_ns=server.time_resolution_ns,
        lists_dotfiles=server.lists_dotfiles,
        trailing_spaces=server.trailing_spaces,
    )


class MountError(ValueError):
    """--mount names neither a known FUSE client nor a directory."""


def mount_way_name(protocol: str | None, mount: str | None) -> str:
    """The way-through name for ``--mount``: the client's name, or ``mount`` for a directory.

    Raises:
        pytest.UsageError: (via the plugin) ``--mount`` is missing or unusable.
    """
    import pytest

    if not mount:
        raise pytest.UsageError("--through mount needs --mount PATH or --mount CLIENT")
    if mount in MOUNTERS:
        if protocol not in MOUNTERS[mount]:
            raise pytest.UsageError(
                f"--mount {mount} speaks {', '.join(MOUNTERS[mount])}, not {protocol or 'local'}"
            )
        return mount
    if not os.path.isdir(mount):
        raise pytest.UsageError(
            f"--mount {mount}: not a directory nor a FUSE client ({', '.join(MOUNTERS)})"
        )
    return "mount"


@dataclass
class Mounted:
    """A mounted file system: where it is, the driver that reaches it, how to take it down."""

    path: str
    driver: Driver = field(default_factory=LocalDriver)
    process: subprocess.Popen[bytes] | None = None  # the FUSE client we started, if any
    owned: bool = False  # we mounted it: unmount it at close
    _cleanups: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        """Unmount what we mounted (by path), stop the client (by PID), remove our directory."""
        if self.owned:
            unmount(self.path)
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=UNMOUNT_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for cleanup in self._cleanups:
            with contextlib.suppress(OSError):
                cleanup()


def unmount(path: str) -> None:
    """Unmount ``path`` if it is mounted; lazily when busy, so a test never hangs here."""
    if not os.path.ismount(path):
        return
    done = subprocess.run(["fusermount", "-u", path], capture_output=True, timeout=30)
    if done.returncode != 0 and os.path.ismount(path):
        subprocess.run(["fusermount", "-uz", path], capture_output=True, timeout=30)


def _wait_mounted(path: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + MOUNT_TIMEOUT
    while not os.path.ismount(path):
        if process.poll() is not None:
            raise ServerUnavailable(f"the FUSE client exited: {log.read_text()[-800:]}", "")
        if time.monotonic() > deadline:
            raise ServerUnavailable(f"no mount on {path} after {MOUNT_TIMEOUT:.0f} s", "")
        time.sleep(0.1)


def _rclone_remote(protocol: str, server: ServerHandle, work: Path) -> list[str]:
    """An on-the-fly rclone remote for the server (no config file: every setting inline)."""
    host, port = "127.0.0.1", server.port
    if protocol == "ftp":
        obscured = subprocess.run(
            ["rclone", "obscure", server.spec.password or ""],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
        return [f":ftp,host={host},port={port},user={server.spec.user},pass={obscured}:"]
    if protocol == "sftp":
        key = server.client_env.get("AVIARY_SFTP_IDENTITY", "")
        return [f":sftp,host={host},port={port},user={server.spec.user},key_file={key}:/"]
    user, password = server.spec.user or "", server.spec.password or ""
    obscured = subprocess.run(
        ["rclone", "obscure", password], capture_output=True, text=True, check=True, timeout=30
    ).stdout.strip()
    return [f":webdav,url='http://{host}:{port}/',vendor=other,user={user},pass={obscured}:"]


def start_mount(
    mount: str, protocol: str | None, server: ServerHandle | None, tmp: Path
) -> Mounted:
    """Mount ``server`` with the FUSE client ``mount`` under ``tmp``, or take a directory.

    Raises:
        ServerUnavailable: the client is not installed or the mount did not come up.
    """
    if mount not in MOUNTERS:
        return Mounted(os.path.realpath(mount))
    if shutil.which(mount) is None:
        raise ServerUnavailable(f"{mount} is not installed", "apt-get install rclone sshfs")
    if server is None or protocol is None:
        raise ServerUnavailable(f"{mount} mounts a server; this driver has none", "")
    point = tmp / f"{mount}-mount"
    point.mkdir()
    log = tmp / f"{mount}.log"
    if mount == "rclone":
        config = tmp / "rclone.conf"
        config.write_text("")
        command = [
            "rclone", "mount", *_rclone_remote(protocol, server, tmp), str(point),
            "--config", str(config), "--cache-dir", str(tmp / "rclone-cache"),
            # What rclone's documentation asks for before programs may open files
            # read-write or seek while writing; without it most writes fail.
            "--vfs-cache-mode", "writes",
            "--log-file", str(log), "--log-level", "ERROR",
        ]  # fmt: skip
    else:
        key = server.client_env.get("AVIARY_SFTP_IDENTITY", "")
        known = server.client_env.get("AVIARY_SFTP_KNOWN_HOSTS", "/dev/null")
        command = [
            "sshfs", "-f", "-p", str(server.port),
            "-o", f"IdentityFile={key},UserKnownHostsFile={known},StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes",
            # sshfs's own cache keeps attributes and listings 20 s, also across its own
            # link and unlink (stale link counts), which makes results depend on timing.
            "-o", "cache=no",
            f"{server.spec.user}@127.0.0.1:/", str(point),
        ]  # fmt: skip
    with log.open("ab") as log_file:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file
        )
    mounted = Mounted(str(point), process=process, owned=True)
    try:
        _wait_mounted(str(point), process, log)
    except BaseException:
        mounted.close()
        raise
    return mounted
