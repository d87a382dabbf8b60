"""The XRootD driver's requests: one call into the bindings, counted, its failure an errno.

``XRootDRequests`` is what every POSIX call of ``drivers.xrootd.XRootDDriver``
stands on: the bindings' client module (imported on first use, since it starts
threads on import), the filesystem object for the server (configured for
recovery and counted as one connection when first used), ``_call`` (one
request with a timeout, its bytes counted from the protocol's framing) and
``_checked`` (a kXR_FSError whose text is unknown interviewed into an errno),
and the questions the driver asks before acting: stat, and whether a new name's
parent is a directory and the name fits in a listing.
"""

from __future__ import annotations

import errno
import importlib
import math
import os
import posixpath
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from drivers import _xrootd_recovery as recovery
from drivers._interface import Driver, StatResult, raise_errno
from drivers._xrootd_replies import (
    IS_DIR,
    body_size,
    cut_by_listings,
    errno_for_status,
    stat_from_info,
)

__all__ = ["REQUEST_HEADER", "RESPONSE_HEADER", "XRootDRequests", "bindings"]

REQUEST_HEADER = 24  # bytes: ClientRequestHdr
RESPONSE_HEADER = 8  # bytes: ServerResponseHeader


def bindings() -> Any:
    """The bindings' client module, imported on first use (it starts threads on import)."""
    client = importlib.import_module("XRootD.client")
    if client.EnvGetInt("TimeoutResolution") != 1:
        # XrdCl checks request deadlines every 15 s by default, so a 3 s timeout
        # expired after up to 15 s (31 s against a closed port): check every second.
        client.EnvPutInt("TimeoutResolution", 1)
    return client


class XRootDRequests(Driver):
    """Requests to one server under ``XRootDDriver`` (see there), one round trip each.

    Args:
        host, port: the server.
        timeout: seconds to wait for any one request (rounded up to whole seconds).
        recovery: seconds the bindings spend reconnecting after a connection broke.
    """

    def __init__(self, host: str, port: int, *, timeout: float, recovery: float) -> None:
        super().__init__()
        self.recovery = recovery
        self.host = host
        self.port = port
        self.timeout = timeout
        self._seconds = max(1, math.ceil(timeout))
        self._fs: Any = None

    def describe(self) -> str:
        return f"root://{self.host}:{self.port}"

    def _filesystem(self) -> Any:
        if self._fs is None:
            recovery.configure_bindings(bindings(), self.timeout, self.recovery)
            self.counters.connection_opened()
            self._fs = bindings().FileSystem(f"root://{self.host}:{self.port}")
        return self._fs

    def _call(
        self, method: Callable[..., Any], *args: Any, path: str | None = None, sent: int = 0
    ) -> Any:
        """One request: returns its response; a failure raises OSError (0: interview needed)."""
        status, response = method(*args, timeout=self._seconds)
        self.counters.round_trip()
        self.counters.sent(REQUEST_HEADER + len(os.fsencode(path or "")) + sent)
        self.counters.received(RESPONSE_HEADER + body_size(response))
        if not status.ok:
            code = errno_for_status(status)
            raise OSError(code, os.strerror(code) if code else str(status.message).strip(), path)
        return response

    def _checked(self, method: Callable[..., Any], *args: Any, path: str, why: str) -> Any:
        try:
            return self._call(method, *args, path=path)
        except OSError as exc:
            if exc.errno == 0:  # kXR_FSError with an unknown text: ask the server
                raise_errno(self._interview(why, path), path)
            raise

    def _interview(self, why: str, path: str) -> int:
        try:
            info = self._call(self._filesystem().stat, path, path=path)
        except OSError:
            return errno.EIO
        if why in ("rmdir", "readdir") and not info.flags & IS_DIR:
            return errno.ENOTDIR
        if why == "rmdir":
            return errno.ENOTEMPTY
        return errno.EIO

    @contextmanager
    def _op(self, name: str) -> Iterator[None]:
        with self.counters.operation(name):
            yield

    def _url(self, path: str) -> str:
        return f"root://{self.host}:{self.port}/{path}"

    # -- questions before acting ---------------------------------------------------------------------

    def _stat(self, path: str) -> StatResult:
        return stat_from_info(self._checked(self._filesystem().stat, path, path=path, why="stat"))

    def _parent_must_be_directory(self, path: str) -> None:
        """ENOENT or ENOTDIR (for ``path``) unless its parent is a directory: one round trip."""
        parent = posixpath.dirname(path.rstrip("/")) or "/"
        if parent == "/":
            return
        try:
            found = self._stat(parent)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, path) from None
        if not found.is_dir():
            raise_errno(errno.ENOTDIR, path)

    def _must_list_whole(self, path: str) -> None:
        """ENAMETOOLONG for a new name listings would cut; a bad parent first, as Linux."""
        if cut_by_listings(path):
            self._parent_must_be_directory(path)
            raise_errno(errno.ENAMETOOLONG, path)
