"""What programs see differently on a remote mount, and why: the one list of protocol limits.

Each :class:`Limit` is a difference the agent cannot take away, because the protocol
(or the server behind it) has no way to express the thing: device nodes, owners, the
permissions other users have. ``docs/agent-programs.md`` lists every one of them by
topic (a test checks that), and the syscall table's notes say what each call answers.
Differences the agent could remove are defects, not limits, and do not belong here.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LIMITS", "Limit"]


@dataclass(frozen=True, slots=True)
class Limit:
    """One difference on remote files: what a program sees, why, and the calls concerned."""

    topic: str
    seen: str  # what a program observes
    why: str  # what the protocol or server lacks
    calls: tuple[str, ...] = ()


LIMITS: tuple[Limit, ...] = (
    Limit(
        "device nodes and fifos",
        "mknod and mkfifo of a remote path fail with ENOSYS; a unix socket cannot live there",
        "Chirp creates only regular files, directories and symlinks",
        ("mknod", "mknodat"),
    ),
    Limit(
        "ownership",
        "every remote file is owned by the server's user; chown to anyone else is EPERM "
        "(--chown ignore: success, the change dropped); git as root needs safe.directory",
        "the server keeps its own owners and the protocol has no call to change them",
        ("chown", "fchown", "lchown", "fchownat"),
    ),
    Limit(
        "other users' permissions",
        "group and other mode bits are stored but not enforced for other users; access is "
        "the server's ACL for the connection",
        "the server knows the client's network identity, not the program's uid",
        ("access", "faccessat", "faccessat2"),
    ),
    Limit(
        "modes of new files",
        "new files are created 0600 and directories 0700 whatever the mode and umask; "
        "a later chmod sets any mode",
        "Chirp servers apply their own umask 077 at creation",
        ("open", "openat", "creat", "mkdir", "mkdirat"),
    ),
    Limit(
        "times",
        "times are whole seconds; there is no birth time",
        "Chirp carries times as whole seconds",
        ("utimensat", "statx"),
    ),
    Limit(
        "absolute symlink targets in a remote tree",
        "a link inside the mount whose target is absolute (`/etc/hostname`) is followed by "
        "the server, inside its export (both Chirp servers: the name is missing), not from "
        "the program's root as the kernel or Parrot follows it; relative targets that stay "
        "inside the export behave as on a local disk",
        "the server resolves links on its side; following them in the agent would take an "
        "lstat of every component of every missing path (gcc's include search alone makes "
        "about a thousand)",
        ("openat", "newfstatat"),
    ),
    Limit(
        "times of an unlinked open file",
        "futimens on a descriptor whose name was unlinked or renamed over (through the agent) "
        "is ENOTSUP; fchmod on it changes that file (Chirp's `fchmod`), never the new file "
        "under the name; under `--cache whole` its copy is dropped at close",
        "Chirp sets times by name only",
        ("utimensat",),
    ),
    Limit(
        "times of a symlink itself",
        "setting a remote symlink's own times (utimensat with AT_SYMLINK_NOFOLLOW, touch -h) "
        "is ENOTSUP; cp -a says it could not preserve them and exits 1",
        "Chirp sets times through the link, never on it",
        ("utimensat",),
    ),
    Limit(
        "locks seen by other clients",
        "fcntl, OFD and flock locks hold between the processes of one aviary run only; other "
        "clients of the server do not see them; a waiting F_SETLKW or flock ends early on "
        "SIGKILL only",
        "the protocol has no locks: the agent keeps them",
        ("fcntl", "flock"),
    ),
    Limit(
        "shared writable mappings",
        "a shared writable map of a remote file is seen by the open file description that "
        "made it (its dups and forks) and by changes made through the agent, not by another "
        "client's; the server gets what the map stored at fsync and close, and stores made "
        "after the last descriptor is closed once the map is gone, at the next close or exit "
        "the agent sees; while one open's map exists, a shared writable map by another open "
        "of the file is EOPNOTSUPP (two sqlite3 processes in WAL mode: the second gets an "
        "I/O error, never a torn index)",
        "the protocol moves bytes by request: there is no shared page cache",
        ("mmap",),
    ),
    Limit(
        "extended attributes",
        "remote files have no extended attributes: get is ENODATA, set is ENOTSUP",
        "Chirp has no extended attributes",
        ("getxattr", "setxattr", "fsetxattr", "listxattr"),
    ),
    Limit(
        "change notification",
        "inotify on a remote path is ENOSYS",
        "the protocol does not tell clients about changes",
        ("inotify_add_watch",),
    ),
    Limit(
        "holes and preallocation",
        "SEEK_HOLE finds no holes before the end; fallocate is ENOSYS",
        "the protocol does not show or make holes",
        ("lseek", "fallocate"),
    ),
)
