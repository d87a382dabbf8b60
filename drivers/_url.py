"""Parsing of the URLs that name a file through a driver.

``chirp://127.0.0.1:9094/dir/file``, ``file:///tmp/x``,
``ftp://user:pass@host:21/path``. Percent-escapes in the path are decoded, so a
name with a space is written ``a%20b`` (a literal space works too).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

__all__ = ["Location", "normalize_path", "parse_url"]


@dataclass(frozen=True, slots=True)
class Location:
    """A parsed URL: which endpoint, and which path inside it."""

    scheme: str
    host: str
    port: int | None
    path: str
    user: str | None = None
    password: str | None = None

    @property
    def authority(self) -> str:
        hostport = f"{self.host}:{self.port}" if self.port is not None else self.host
        return f"{self.user}@{hostport}" if self.user else hostport

    def with_path(self, path: str) -> Location:
        return Location(self.scheme, self.host, self.port, path, self.user, self.password)

    def __str__(self) -> str:
        return f"{self.scheme}://{self.authority}{self.path}"


def normalize_path(path: str) -> str:
    """Make ``path`` absolute and collapse "." and ".." without leaving "/"."""
    collapsed = posixpath.normpath("/" + path.lstrip("/"))
    # normpath keeps a leading "//" (POSIX allows it to mean something); we don't.
    return "/" + collapsed.lstrip("/")


def parse_url(url: str) -> Location:
    """Split a driver URL into a :class:`Location`.

    Raises:
        ValueError: no scheme, a bad port (0 included), or a NUL byte.
    """
    if "\0" in url or "%00" in url:
        raise ValueError(f"URL holds a NUL byte, which no path can: {url!r}")
    if "://" not in url:
        raise ValueError(f"not a URL (expected SCHEME://HOST[:PORT]/PATH): {url!r}")
    parts = urlsplit(url)
    if not parts.scheme:
        raise ValueError(f"URL has no scheme: {url!r}")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"bad port in URL {url!r}: {exc}") from None
    if port == 0:
        raise ValueError(f"bad port in URL {url!r}: port 0 names no server")
    # urlsplit stops the path at "?" and "#", which are legal in file names.
    rest = url.split("://", 1)[1]
    slash = rest.find("/")
    raw_path = rest[slash:] if slash >= 0 else "/"
    return Location(
        scheme=parts.scheme.lower(),
        host=parts.hostname or "",
        port=port,
        path=normalize_path(unquote(raw_path)),
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )
