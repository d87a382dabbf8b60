"""The executor: performs file operations with real syscalls, for the suite's agent runs.

Run under ``aviary run``, it reads one JSON request per line on stdin
(``{"op": "pread", "args": [3, 10, 0]}``) and answers one JSON line on stdout:
``{"ok": RESULT}`` or ``{"errno": N}``. Bytes travel as hex. It stays alive
across hypothesis examples so that a conformance run pays the agent's start-up
once. It must import nothing but the standard library: it runs as a plain
program under the agent.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

_FIELDS = (
    "st_mode",
    "st_ino",
    "st_dev",
    "st_nlink",
    "st_uid",
    "st_gid",
    "st_size",
    "st_atime_ns",
    "st_mtime_ns",
    "st_ctime_ns",
    "st_blksize",
    "st_blocks",
    "st_rdev",
)


def _stat(st: os.stat_result) -> dict[str, int]:
    return {name: int(getattr(st, name)) for name in _FIELDS}


def _readdir(path: str) -> list[list[str]]:
    entries = []
    with os.scandir(path) as it:  # getdents64, with the d_type the agent reports
        for entry in it:
            if entry.is_symlink():
                kind = "symlink"
            elif entry.is_dir(follow_symlinks=False):
                kind = "directory"
            elif entry.is_file(follow_symlinks=False):
                kind = "regular"
            else:
                kind = "unknown"
            entries.append([entry.name, kind])
    return entries


def _statfs(path: str) -> dict[str, int]:
    sv = os.statvfs(path)
    return {"f_bsize": sv.f_frsize, "f_blocks": sv.f_blocks, "f_bfree": sv.f_bfree, "f_bavail": sv.f_bavail,
            "f_files": sv.f_files, "f_ffree": sv.f_ffree}  # fmt: skip


def _utimens(path: str, times: list[int] | None) -> None:
    if times is None:
        os.utime(path)
    else:
        os.utime(path, ns=(times[0], times[1]))


OPERATIONS: dict[str, Callable[..., Any]] = {
    "stat": lambda p: _stat(os.stat(p)),
    "lstat": lambda p: _stat(os.lstat(p)),
    "fstat": lambda fd: _stat(os.fstat(fd)),
    "access": lambda p, mode: None if os.access(p, mode) else _raise_access(p),
    "statfs": _statfs,
    "chmod": lambda p, mode: os.chmod(p, mode),
    "utimens": _utimens,
    "open": lambda p, flags, mode: os.open(p, flags, mode),
    "close": lambda fd: os.close(fd),
    "pread": lambda fd, size, offset: os.pread(fd, size, offset).hex(),
    "pwrite": lambda fd, data, offset: os.pwrite(fd, bytes.fromhex(data), offset),
    "fsync": lambda fd: os.fsync(fd),
    "ftruncate": lambda fd, length: os.ftruncate(fd, length),
    "truncate": lambda p, length: os.truncate(p, length),
    "readdir": _readdir,
    "mkdir": lambda p, mode: os.mkdir(p, mode),
    "rmdir": lambda p: os.rmdir(p),
    "unlink": lambda p: os.unlink(p),
    "rename": lambda old, new: os.rename(old, new),
    "link": lambda old, new: os.link(old, new, follow_symlinks=False),
    "symlink": lambda target, p: os.symlink(target, p),
    "readlink": lambda p: os.readlink(p),
}


def _raise_access(path: str) -> None:
    # os.access answers a bool; ask once more for the errno the kernel gives.
    fd = os.open(path, os.O_PATH)
    os.close(fd)
    raise PermissionError(13, os.strerror(13), path)


def main() -> int:
    os.umask(0o022)
    for line in sys.stdin:
        request = json.loads(line)
        try:
            result = OPERATIONS[request["op"]](*request["args"])
            answer: dict[str, Any] = {"ok": result}
        except OSError as exc:
            answer = {"errno": exc.errno or 5, "message": exc.strerror or str(exc)}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
