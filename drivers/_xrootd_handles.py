"""The XRootD driver's open handles: which server handle each uses, and requests on one.

The server lets one handle at a time have a file open for writing, and then
refuses every other open of it (kXR_FileLocked), so the handles that
``drivers.xrootd.XRootDDriver`` gives out on one path share one server handle
(``SharedFile``). ``XRootDHandles`` keeps that table: a handle's record, the
shared handle each path names (moved by renames and dropped by unlinks through
the driver), and a request on an open file, which after a broken connection
reopens the file (``drivers._xrootd_recovery.reopen``) and is sent again.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from contextlib import suppress
from typing import Any, TypeVar, cast

from drivers import _xrootd_recovery as recovery
from drivers._interface import Handle, raise_errno
from drivers._network import call_with_recovery
from drivers._xrootd_recovery import OpenFile, SharedFile
from drivers._xrootd_replies import errno_for_status
from drivers._xrootd_requests import XRootDRequests, bindings

__all__ = ["XRootDHandles"]

T = TypeVar("T")


class XRootDHandles(XRootDRequests):
    """The open handles under ``XRootDDriver`` (see there) and the server handles they share."""

    _files: dict[int, OpenFile]
    _shared: dict[str, SharedFile]  # by the path each names now
    _next_handle: int

    def close_driver(self) -> None:
        files, self._files, self._shared = self._files, {}, {}
        shared = {id(e.shared): e.shared for e in files.values() if e.shared is not None}
        for one in shared.values():
            with suppress(Exception):
                one.file.close(timeout=self._seconds)
        self._fs = None  # the bindings keep the pooled connection; nothing else to free

    def _entry(self, handle: Handle) -> OpenFile:
        entry = self._files.get(int(handle))
        if entry is None:
            raise_errno(errno.EBADF)
            raise AssertionError  # unreachable
        return entry

    def _remember(self, path: str, flags: int, shared: SharedFile | None) -> Handle:
        number = self._next_handle
        self._next_handle += 1
        self._files[number] = OpenFile(path, flags, shared)
        return Handle(number)

    def _forget_name(self, path: str) -> None:
        """``path`` no longer names the file its shared handle has open."""
        self._shared.pop(path, None)

    def _move_names(self, old: str, new: str) -> None:
        """A rename through this driver: shared handles follow their files."""
        if old == new:
            return  # the same name: nothing moved, nothing replaced
        self._forget_name(new)
        prefix = old.rstrip("/") + "/"
        for key in [k for k in self._shared if k == old or k.startswith(prefix)]:
            shared = self._shared.pop(key)
            shared.path = new + key[len(old) :]
            self._shared[shared.path] = shared

    def _file_of(self, handle: Handle) -> tuple[OpenFile, Any]:
        entry = self._entry(handle)
        shared = entry.shared
        if shared is None:
            raise_errno(errno.EISDIR, entry.path)
            raise AssertionError  # unreachable
        if shared.broken:
            shared.file = recovery.reopen(
                bindings(),
                shared.file,
                self._url(shared.path),
                shared.writable,
                shared.identity,
                self._seconds,
                errno_for_status,
            )
            shared.broken = False
        return entry, shared.file

    def _on_file(
        self, operation: str, handle: Handle, attempt: Callable[[OpenFile, Any], T],
        *, replay: bool = True,
    ) -> T:  # fmt: skip
        """A request on an open file; after a broken connection, reopened and sent again."""

        def broke() -> None:
            shared = self._entry(handle).shared
            if shared is not None:
                shared.broken = True

        budget = self.recovery if replay else 0.0
        return cast(
            T,
            call_with_recovery(
                operation, lambda: attempt(*self._file_of(handle)), budget=budget, reset=broke
            ),
        )
