"""The driver interface, carried out by real syscalls of a program under ``aviary run``.

:class:`AgentExecutor` is a :class:`drivers.Driver` whose every operation is a
request to :mod:`conformance.executor`, a small program running under the
reference agent. The same probes and state machine that test a driver
directly thus test it through the agent: the program's ``open`` is a real
``openat`` that the agent turns into driver calls.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Self

from drivers import DirEntry, Driver, FileType, Handle, Location, StatFS, StatResult

__all__ = ["AgentExecutor"]

EXECUTOR = Path(__file__).with_name("executor.py")
REPLY_TIMEOUT = 60.0  # seconds the executor may take to answer one request


class AgentExecutor(Driver):
    """Operations on ``prefix + path`` performed by the executor under the agent.

    Args:
        prefix: where paths start in the program's namespace (``/chirp/127.0.0.1:9094``
            or a local directory).
        agent_args: extra ``aviary run`` options (``-m MOUNTLIST``, ``--cache whole``).
        command: what runs a program under the agent (default ``aviary run``).
    """

    name = "agent"
    url_schemes = ()

    def __init__(
        self, prefix: str, agent_args: list[str] | None = None, command: list[str] | None = None
    ) -> None:
        super().__init__()
        self.prefix = prefix.rstrip("/")
        command = [
            *(command or [sys.executable, "-m", "harness.cli", "run"]),
            *(agent_args or []),
            "--",
            sys.executable,
            str(EXECUTOR),
        ]
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )

    @classmethod
    def from_location(cls, location: Location, *, timeout: float = 30.0) -> Self:
        raise TypeError("AgentExecutor is made by the conformance fixtures")

    def describe(self) -> str:
        return f"agent:{self.prefix}"

    def close_driver(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            with contextlib.suppress(OSError):
                self.process.stdin.close()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()

    def _call(self, op: str, *args: Any) -> Any:
        assert self.process.stdin is not None and self.process.stdout is not None
        with self.counters.operation(op):
            try:
                self.process.stdin.write(json.dumps({"op": op, "args": list(args)}) + "\n")
                self.process.stdin.flush()
            except OSError:
                raise OSError(
                    errno.EPIPE, f"the executor under the agent died: {self._stderr()}"
                ) from None
            line = self.process.stdout.readline()
            if not line:
                raise OSError(errno.EPIPE, f"the executor under the agent died: {self._stderr()}")
            answer = json.loads(line)
            if "errno" in answer:
                raise OSError(
                    answer["errno"], answer.get("message") or os.strerror(answer["errno"])
                )
            return answer["ok"]

    def _stderr(self) -> str:
        if self.process.poll() is None or self.process.stderr is None:
            return "(still running)"
        return self.process.stderr.read()[-2000:]

    def _p(self, path: str) -> str:
        return self.prefix + "/" + path.lstrip("/") if path not in ("", "/") else self.prefix or "/"

    @staticmethod
    def _stat(fields: dict[str, int]) -> StatResult:
        return StatResult(**fields)  # type: ignore[arg-type]

    def stat(self, path: str) -> StatResult:
        return self._stat(self._call("stat", self._p(path)))

    def lstat(self, path: str) -> StatResult:
        return self._stat(self._call("lstat", self._p(path)))

    def fstat(self, handle: Handle) -> StatResult:
        return self._stat(self._call("fstat", int(handle)))

    def access(self, path: str, mode: int) -> None:
        self._call("access", self._p(path), mode)

    def statfs(self, path: str) -> StatFS:
        return StatFS(f_type=0, **self._call("statfs", self._p(path)))

    def chmod(self, path: str, mode: int) -> None:
        self._call("chmod", self._p(path), mode)

    def utimens(self, path: str, times_ns: tuple[int, int] | None = None) -> None:
        self._call("utimens", self._p(path), list(times_ns) if times_ns else None)

    def open(self, path: str, flags: int, mode: int = 0o666) -> Handle:
        return Handle(self._call("open", self._p(path), flags, mode))

    def close(self, handle: Handle) -> None:
        self._call("close", int(handle))

    def pread(self, handle: Handle, size: int, offset: int) -> bytes:
        return bytes.fromhex(self._call("pread", int(handle), size, offset))

    def pwrite(self, handle: Handle, data: bytes, offset: int) -> int:
        return int(self._call("pwrite", int(handle), data.hex(), offset))

    def fsync(self, handle: Handle) -> None:
        self._call("fsync", int(handle))

    def ftruncate(self, handle: Handle, length: int) -> None:
        self._call("ftruncate", int(handle), length)

    def truncate(self, path: str, length: int) -> None:
        self._call("truncate", self._p(path), length)

    def readdir(self, path: str) -> list[DirEntry]:
        return [
            DirEntry(name, FileType(kind)) for name, kind in self._call("readdir", self._p(path))
        ]

    def mkdir(self, path: str, mode: int = 0o777) -> None:
        self._call("mkdir", self._p(path), mode)

    def rmdir(self, path: str) -> None:
        self._call("rmdir", self._p(path))

    def unlink(self, path: str) -> None:
        self._call("unlink", self._p(path))

    def rename(self, old: str, new: str) -> None:
        self._call("rename", self._p(old), self._p(new))

    def link(self, old: str, new: str) -> None:
        self._call("link", self._p(old), self._p(new))

    def symlink(self, target: str, linkpath: str) -> None:
        self._call("symlink", target, self._p(linkpath))

    def readlink(self, path: str) -> str:
        return str(self._call("readlink", self._p(path)))
