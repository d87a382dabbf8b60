"""Handlers that change the namespace: mkdir, rmdir, unlink, rename, link, symlink,
truncate, chmod, chown, utimensat, and the extended-attribute calls."""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import stat
import struct
import time

from drivers import Driver, StatResult
from reference_agent._abi import AT_FDCWD, AT_REMOVEDIR, AT_SYMLINK_NOFOLLOW, UTIME_NOW, UTIME_OMIT
from reference_agent._common import last_component, path_call, rewrite_args
from reference_agent.agent import Agent
from reference_agent.call import NATIVE, Call, Outcome, Resolved
from reference_agent.files import Truncated
from reference_agent.namespace import LocalTarget, Refused, RemoteTarget
from reference_agent.sys_file import empty_path_fd

RENAME_NOREPLACE = 1
_KEEP = 0xFFFFFFFF  # (uid_t)-1: leave this one alone
_TIMESPEC_PAIR = struct.Struct("<qqqq")
_TIMEVAL_PAIR = struct.Struct("<qqqq")


#: What the kernel answers for a name ending in "." or ".." where a new name is made.
_NEW_NAME_IS_DOT = errno.EEXIST


def _mkdir(agent: Agent, call: Call, dirfd: int, index: int, mode: int) -> Outcome:
    def remote(driver: Driver, target: RemoteTarget, resolved: Resolved) -> int:
        if last_component(call.string(index)) in (".", ".."):
            return -_NEW_NAME_IS_DOT
        driver.mkdir(target.path, mode & 0o7777)
        return 0

    return path_call(agent, call, dirfd, index, remote, service=lambda c, r: -errno.EEXIST)


def sys_mkdir(agent: Agent, call: Call) -> Outcome:
    """Mkdir implements Linux syscall mkdir(2)."""
    return _mkdir(agent, call, AT_FDCWD, 0, call.arg(1))


def sys_mkdirat(agent: Agent, call: Call) -> Outcome:
    """Mkdirat implements Linux syscall mkdirat(2)."""
    return _mkdir(agent, call, call.fd(0), 1, call.arg(2))


def _remove(agent: Agent, call: Call, dirfd: int, index: int, directory: bool) -> Outcome:
    def remote(driver: Driver, target: RemoteTarget, resolved: Resolved) -> int:
        ending = last_component(call.string(index))
        if directory:
            if ending in (".", ".."):  # as the kernel: "." is in use, ".." is not empty
                return -errno.EINVAL if ending == "." else -errno.ENOTEMPTY
            driver.rmdir(target.path)
        else:
            if ending in (".", ".."):
                return -errno.EISDIR
            if ending == "/":
                return -errno.EISDIR  # "dir/" got past path_call's ENOTDIR for "file/"
            driver.unlink(target.path)
        agent.removed(driver, target.path, resolved.logical)
        return 0

    return path_call(agent, call, dirfd, index, remote)


def sys_rmdir(agent: Agent, call: Call) -> Outcome:
    """Rmdir implements Linux syscall rmdir(2)."""
    return _remove(agent, call, AT_FDCWD, 0, directory=True)


def sys_unlink(agent: Agent, call: Call) -> Outcome:
    """Unlink implements Linux syscall unlink(2)."""
    return _remove(agent, call, AT_FDCWD, 0, directory=False)


def sys_unlinkat(agent: Agent, call: Call) -> Outcome:
    """Unlinkat implements Linux syscall unlinkat(2)."""
    return _remove(agent, call, call.fd(0), 1, directory=bool(call.fd(2) & AT_REMOVEDIR))


def _two_paths(
    agent: Agent,
    call: Call,
    old: tuple[int, int],
    new: tuple[int, int],
    remote_op: str,
    flags: int = 0,
) -> Outcome:
    """rename and link: both paths on one endpoint, both local, or EXDEV."""
    texts = [call.string(index) for _, index in (old, new)]
    resolved = [agent.resolve(call, old[0], texts[0]), agent.resolve(call, new[0], texts[1])]
    targets = [r.target for r in resolved]
    endings = [last_component(text) for text in texts]
    remote = any(isinstance(t, RemoteTarget) for t in targets)
    # The kernel never sees a call the agent refuses or serves: it answers the
    # descriptors' errors itself then, in the kernel's order.
    answered_here = any(isinstance(t, RemoteTarget | Refused) for t in targets)
    # The kernel takes the names in order, each whole: the old name's directory
    # descriptor and directory walk, then the new name's (rename looks both
    # directories up before either name; link looks the old name up whole first).
    first = targets[0]
    for which, ((dirfd, _), text, target) in enumerate(
        zip((old, new), texts, targets, strict=True)
    ):
        refusal = _dirfd_refusal(agent, call, dirfd, text) if answered_here else None
        if refusal is None and isinstance(target, Refused):
            refusal = -target.errno
        if which == 1 and isinstance(first, RemoteTarget):
            if remote_op == "link":
                agent.driver_for(call, first).lstat(first.path)
            elif refusal is not None:  # what the old name's walk meets comes first
                _parent_directory(agent.driver_for(call, first), first.path)
        if refusal is not None:
            return refusal
    if remote:
        if remote_op == "rename" and {".", ".."} & set(endings):
            return -errno.EBUSY  # the kernel never renames "." or ".."
        if remote_op == "link" and endings[1] in (".", ".."):
            return -errno.EEXIST
    if all(t is NATIVE or isinstance(t, LocalTarget) for t in targets):
        rewrites = {
            index: r.rewrite
            for (_, index), r in zip((old, new), resolved, strict=True)
            if r.rewrite is not None
        }
        return rewrite_args(call, rewrites) if rewrites else None
    first, second = targets
    if not (
        isinstance(first, RemoteTarget)
        and isinstance(second, RemoteTarget)
        and first.endpoint == second.endpoint
    ):
        return -errno.EXDEV
    driver = agent.driver_for(call, first)
    if not driver.capabilities.writable:
        # A read-only file system refuses the change once both directories are found,
        # before it looks the old name up: the driver answers in that order.
        getattr(driver, remote_op)(first.path, second.path)
    try:
        source = driver.lstat(first.path)
    except FileNotFoundError:
        if remote_op == "rename":  # the kernel walks both directories before either name
            _parent_directory(driver, first.path)
            _parent_directory(driver, second.path)
        raise
    if "/" in endings and not source.is_dir():
        return -errno.ENOTDIR  # "file/" names a directory
    if remote_op == "link":
        driver.link(first.path, second.path)
        return 0
    if flags & ~RENAME_NOREPLACE:
        return agent.hole(
            call, f"remote path {resolved[0].logical} (flags {flags:#x})", errno.EINVAL
        )
    if flags & RENAME_NOREPLACE:
        try:
            driver.lstat(second.path)
            return -errno.EEXIST
        except FileNotFoundError:
            pass
    driver.rename(first.path, second.path)
    agent.renamed(driver, first.path, second.path, resolved[0].logical, resolved[1].logical)
    return 0


def _parent_directory(driver: Driver, path: str) -> None:
    """Raise what the kernel answers if ``path``'s directory is missing or no directory."""
    if not driver.stat(posixpath.dirname(path) or "/").is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", path)


def _dirfd_refusal(agent: Agent, call: Call, dirfd: int, path: str) -> int | None:
    """EBADF or ENOTDIR for a relative path on a descriptor that is not an open directory.

    The kernel would answer these itself, but a call with its other path on a remote
    mount never reaches it: the answer must not become EXDEV.
    """
    if dirfd == AT_FDCWD or not path or path.startswith("/"):
        return None
    remote = agent.remote_file(call, dirfd)
    if remote is not None:
        return None if remote.is_dir else -errno.ENOTDIR
    try:
        mode = os.stat(f"/proc/{call.pid}/fd/{dirfd}").st_mode
    except OSError:
        return -errno.EBADF
    return None if stat.S_ISDIR(mode) else -errno.ENOTDIR


def sys_rename(agent: Agent, call: Call) -> Outcome:
    """Rename implements Linux syscall rename(2)."""
    return _two_paths(agent, call, (AT_FDCWD, 0), (AT_FDCWD, 1), "rename")


def sys_renameat(agent: Agent, call: Call) -> Outcome:
    """Renameat implements Linux syscalls renameat(2) and renameat2(2)."""
    flags = call.fd(4) if call.name == "renameat2" else 0
    return _two_paths(agent, call, (call.fd(0), 1), (call.fd(2), 3), "rename", flags)


def sys_link(agent: Agent, call: Call) -> Outcome:
    """Link implements Linux syscall link(2)."""
    return _two_paths(agent, call, (AT_FDCWD, 0), (AT_FDCWD, 1), "link")


def sys_linkat(agent: Agent, call: Call) -> Outcome:
    """Linkat implements Linux syscall linkat(2)."""
    return _two_paths(agent, call, (call.fd(0), 1), (call.fd(2), 3), "link")


def _symlink(agent: Agent, call: Call, dirfd: int, index: int) -> Outcome:
    def remote(driver: Driver, target: RemoteTarget, resolved: Resolved) -> int:
        if last_component(call.string(index)) in (".", ".."):
            return -_NEW_NAME_IS_DOT
        driver.symlink(call.string(0), target.path)
        return 0

    return path_call(agent, call, dirfd, index, remote)


def sys_symlink(agent: Agent, call: Call) -> Outcome:
    """Symlink implements Linux syscall symlink(2)."""
    return _symlink(agent, call, AT_FDCWD, 1)


def sys_symlinkat(agent: Agent, call: Call) -> Outcome:
    """Symlinkat implements Linux syscall symlinkat(2)."""
    return _symlink(agent, call, call.fd(1), 2)


def sys_truncate(agent: Agent, call: Call) -> Outcome:
    """Truncate implements Linux syscall truncate(2)."""

    def remote(driver: Driver, target: RemoteTarget, resolved: Resolved) -> int:
        driver.truncate(target.path, call.sarg(1))
        inode = None
        if len(agent.files):  # opens of the file by other names hear of it by its inode
            with contextlib.suppress(OSError):
                st = driver.stat(target.path)
                inode = None if "st_ino" in st.synthesized else st.st_ino
        agent.files.changed(driver, target.path, change=Truncated(call.sarg(1)), inode=inode)
        return 0

    return path_call(agent, call, AT_FDCWD, 0, remote)


def _chmod(
    agent: Agent, call: Call, dirfd: int, index: int, mode: int, follow: bool = True
) -> Outcome:
    def remote(driver: Driver, target: RemoteTarget, resolved: Resolved) -> int:
        if not follow and driver.lstat(target.path).is_lnk():
            return -errno.EOPNOTSUPP  # as Linux: a symlink's mode cannot be changed
        driver.chmod(target.path, mode & 0o7777)
        return 0

    if call.name == "fchmodat2" and empty_path_fd(call, call.fd(3), index):
        remote_file = agent.remote_file(call, dirfd)  # fchmodat2(fd, "", AT_EMPTY_PATH)
        if remote_file is None:
            return None
        if remote_file.is_link:
            return -errno.EOPNOTSUPP
        remote_file.chmod(mode)
        return 0
    return path_call(agent, call, dirfd, index, remote)


def sys_chmod(agent: Agent, call: Call) -> Outcome:
    """Chmod implements Linux syscall chmod(2)."""
    return _chmod(agent, call, AT_FDCWD, 0, call.arg(1))


def sys_fchmodat(agent: Agent, call: Call) -> Outcome:
    """Fchmodat implements Linux syscalls fchmodat(2) and fchmodat2(2)."""
    follow = call.name != "fchmodat2" or not call.fd(3) & AT_SYMLINK_NOFOLLOW
    return _chmod(agent, call, call.fd(0), 1, call.arg(2), follow)


def _owner_unchanged(st: StatResult, uid: int, gid: int) -> bool:
    """chown to the owner a file already has (or -1) changes nothing, so it may succeed."""
    return uid in (_KEEP, st.st_uid) and gid in (_KEEP, st.st_gid)


def sys_chown(agent: Agent, call: Call) -> Outcome:
    """Chown, lchown and fchownat: servers keep their own owners; a real change is EPERM."""
    at_form = call.name == "fchownat"
    dirfd, index = (call.fd(0), 1) if at_form else (AT_FDCWD, 0)
    uid, gid = (call.fd(index + 1) & 0xFFFFFFFF, call.fd(index + 2) & 0xFFFFFFFF)
    follow = call.name == "chown" or (at_form and not call.fd(4) & AT_SYMLINK_NOFOLLOW)

    def remote(driver: Driver, target: RemoteTarget, resolved: Resolved) -> int:
        st = driver.stat(target.path) if follow else driver.lstat(target.path)
        return 0 if _owner_unchanged(st, uid, gid) else -errno.EPERM

    if at_form and empty_path_fd(call, call.fd(4), index):
        # fchownat(fd, "", AT_EMPTY_PATH): the descriptor's file, an O_PATH link's own too.
        remote_file = agent.remote_file(call, dirfd)
        if remote_file is None:
            return None
        return 0 if _owner_unchanged(remote_file.stat(), uid, gid) else -errno.EPERM
    return path_call(agent, call, dirfd, index, remote)


def sys_fchown(agent: Agent, call: Call) -> Outcome:
    """Fchown implements Linux syscall fchown(2) on remote files, as chown does."""
    remote_file = agent.remote_file(call, call.fd(0))
    if remote_file is None:
        return None
    if remote_file.flags & os.O_PATH:
        return -errno.EBADF  # as Linux: fchown needs a descriptor opened for I/O
    st = remote_file.stat()
    return (
        0
        if _owner_unchanged(st, call.fd(1) & 0xFFFFFFFF, call.fd(2) & 0xFFFFFFFF)
        else -errno.EPERM
    )


def _times(call: Call, address: int, driver: Driver, path: str) -> tuple[int, int] | None:
    """The (atime, mtime) in ns a utimensat asks for; None means both now."""
    if address == 0:
        return None
    a_sec, a_nsec, m_sec, m_nsec = _TIMESPEC_PAIR.unpack(call.read(address, _TIMESPEC_PAIR.size))
    now = time.time_ns()
    current = None
    values = []
    for sec, nsec, field in ((a_sec, a_nsec, "st_atime_ns"), (m_sec, m_nsec, "st_mtime_ns")):
        if nsec == UTIME_NOW:
            values.append(now)
        elif nsec == UTIME_OMIT:
            current = current or driver.stat(path)
            values.append(getattr(current, field))
        elif not 0 <= nsec < 1_000_000_000:
            raise OSError(errno.EINVAL, "bad nanoseconds")
        else:
            values.append(sec * 1_000_000_000 + nsec)
    return values[0], values[1]


def sys_utimensat(agent: Agent, call: Call) -> Outcome:
    """Utimensat implements Linux syscall utimensat(2) (futimens when the path is NULL)."""
    dirfd = call.fd(0)
    empty_path = call.arg(1) != 0 and empty_path_fd(call, call.fd(3), 1)
    if call.arg(1) == 0 or empty_path:
        remote_file = agent.remote_file(call, dirfd)
        if remote_file is None:
            return None
        if remote_file.is_link:  # utimensat(fd, "", AT_EMPTY_PATH) on an O_PATH link
            return agent.hole(
                call, f"remote symlink {remote_file.logical} (its own times)", errno.EOPNOTSUPP
            )
        if remote_file.flags & os.O_PATH and not empty_path:
            return -errno.EBADF  # futimens needs a descriptor opened for I/O
        if remote_file.name_gone:
            # Times are set by name only, and the name is another file's now (or none).
            return agent.hole(
                call, f"remote file {remote_file.logical} (unlinked: its times)", errno.EOPNOTSUPP
            )
        times = _times(call, call.arg(2), remote_file.driver, remote_file.remote_path)
        remote_file.driver.utimens(remote_file.remote_path, times)
        remote_file.times_set(times)
        return 0

    def remote(driver: Driver, target: RemoteTarget, resolved: Resolved) -> int:
        if call.fd(3) & AT_SYMLINK_NOFOLLOW and driver.lstat(target.path).is_lnk():
            # The protocol sets times only through the link: the target's would change.
            return agent.hole(
                call, f"remote symlink {resolved.logical} (its own times)", errno.EOPNOTSUPP
            )
        times = _times(call, call.arg(2), driver, target.path)
        driver.utimens(target.path, times)
        live = agent.files.live_copy(driver, target.path)
        if live is not None:
            live.times_set(times)
        return 0

    return path_call(agent, call, dirfd, 1, remote)


def sys_utimes(agent: Agent, call: Call) -> Outcome:
    """Utime and utimes implement the old Linux syscalls utime(2) and utimes(2)."""

    def remote(driver: Driver, target: RemoteTarget, resolved: Resolved) -> int:
        address = call.arg(1)
        times: tuple[int, int] | None = None
        if address and call.name == "utimes":
            a_sec, a_usec, m_sec, m_usec = _TIMEVAL_PAIR.unpack(
                call.read(address, _TIMEVAL_PAIR.size)
            )
            times = (a_sec * 10**9 + a_usec * 1000, m_sec * 10**9 + m_usec * 1000)
        elif address:
            a_sec, m_sec = struct.unpack("<qq", call.read(address, 16))
            times = (a_sec * 10**9, m_sec * 10**9)
        driver.utimens(target.path, times)
        live = agent.files.live_copy(driver, target.path)
        if live is not None:
            live.times_set(times)
        return 0

    return path_call(agent, call, AT_FDCWD, 0, remote)


def sys_xattr_path(agent: Agent, call: Call) -> Outcome:
    """The *xattr calls on paths: remote files have no extended attributes."""
    dirfd = AT_FDCWD

    def remote(driver: Driver, target: RemoteTarget, resolved: Resolved) -> int:
        driver.lstat(target.path)  # ENOENT and friends come first
        if call.name.endswith("listxattr"):
            return 0
        if call.name.endswith("getxattr") or call.name.endswith("removexattr"):
            return -errno.ENODATA  # "no such attribute": what ls -l expects
        return agent.hole(call, f"remote path {resolved.logical}", errno.ENOTSUP)

    def service(call_: Call, resolved: Resolved) -> int:
        return 0 if call.name.endswith("listxattr") else -errno.ENODATA

    return path_call(agent, call, dirfd, 0, remote, service=service)


def sys_xattr_fd(agent: Agent, call: Call) -> Outcome:
    """The f*xattr calls: as above, on a remote descriptor."""
    remote = agent.remote_file(call, call.fd(0))
    if remote is None:
        return None
    if call.name == "flistxattr":
        return 0
    if call.name in ("fgetxattr", "fremovexattr"):
        return -errno.ENODATA
    return agent.hole(call, f"remote file {remote.logical}", errno.ENOTSUP)


def sys_path_hole(agent: Agent, call: Call) -> Outcome:
    """Path calls the agent does not emulate: native locally, refused on remote paths."""
    at_forms = {"mknodat": (0, 1), "name_to_handle_at": (0, 1), "inotify_add_watch": (None, 1)}
    dirfd_index, path_index = at_forms.get(call.name, (None, 0))
    dirfd = call.fd(dirfd_index) if dirfd_index is not None else AT_FDCWD

    def remote(driver: Driver, target: RemoteTarget, resolved: Resolved) -> int:
        return agent.hole(call, f"remote path {resolved.logical}")

    return path_call(agent, call, dirfd, path_index, remote)
