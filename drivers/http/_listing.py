"""Directory listings from the pages that HTTP servers generate for a directory.

HTTP has no "list a directory" request: a server that lists a directory does
so by answering ``GET /dir/`` with a page of its own making. This module
reads the formats of the servers aviary is tested against, and refuses (with
ENOTSUP) a page it does not recognise rather than guess names from any HTML:

- nginx ``autoindex_format json``: a JSON array of objects with ``name`` and
  ``type`` ("file", "directory", "other"); nginx leaves out names starting
  with a dot;
- nginx ``autoindex`` in its default HTML format: ``<a href="NAME">`` lines in
  a ``<pre>`` block, a trailing slash marking directories (names are cut to
  50 characters in the text, so only the href is used);
- Python's ``http.server``: ``<li><a href="NAME">DISPLAY</a></li>`` items under a
  ``<title>Directory listing for ...`` head; a trailing slash on the href marks
  a directory (or a link to one), an ``@`` on the display name a symlink.

Every format gives the type that ``stat`` (which follows symlinks) reports:
HTTP servers follow symlinks, so what a listing calls a link is reported as
what it points to.

Only relative links to direct members count as entries: sort links
(``?C=N;O=D``), the parent (``../``) and absolute links are not names in the
directory, and a name is taken from the percent-decoded href, never from the
text shown, which servers escape, decorate ("@", "/") or shorten.
"""

from __future__ import annotations

import errno
import html
import json
import re
from urllib.parse import unquote

from drivers._interface import DirEntry, FileType

__all__ = ["ListingFormat", "UnrecognisedListing", "parse_listing"]

_PYTHON_TITLE = re.compile(r"<title>Directory listing for [^<]*</title>", re.IGNORECASE)
_PYTHON_ITEM = re.compile(r'<li><a href="([^"]*)">(.*?)</a></li>', re.DOTALL)
_NGINX_TITLE = re.compile(r"<title>Index of [^<]*</title>", re.IGNORECASE)
_NGINX_ITEM = re.compile(r'<a href="([^"]*)">')
_JSON_TYPES = {
    "file": FileType.REGULAR,
    "directory": FileType.DIRECTORY,
    "other": FileType.UNKNOWN,
}


class ListingFormat:
    """Names of the formats, as reported in messages and counters."""

    NGINX_JSON = "nginx-json"
    NGINX_HTML = "nginx-html"
    PYTHON_HTML = "python-http.server"


class UnrecognisedListing(OSError):
    """The server answered a directory with a page that is not a listing we know."""

    def __init__(self, path: str, detail: str) -> None:
        super().__init__(
            errno.ENOTSUP,
            f"the server's page for this directory is not a listing aviary can read ({detail})",
            path,
        )


def parse_listing(path: str, content_type: str | None, body: bytes) -> tuple[str, list[DirEntry]]:
    """The entries of a directory page, and which format it was in.

    Args:
        path: the directory's driver path (for messages).
        content_type: the response's Content-Type.
        body: the whole page.

    Raises:
        UnrecognisedListing: ENOTSUP, for a page in no known format (an index.html
            served instead of a listing, for example).
    """
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    text = body.decode("utf-8", "surrogateescape")
    if kind == "application/json" or text.lstrip().startswith("["):
        return ListingFormat.NGINX_JSON, _parse_nginx_json(path, text)
    if _PYTHON_TITLE.search(text):
        return ListingFormat.PYTHON_HTML, _parse_python_html(text)
    if _NGINX_TITLE.search(text):
        return ListingFormat.NGINX_HTML, _parse_nginx_html(text)
    raise UnrecognisedListing(path, f"Content-Type {kind or 'missing'}")


def _parse_nginx_json(path: str, text: str) -> list[DirEntry]:
    try:
        items = json.loads(text)
    except ValueError as exc:
        raise UnrecognisedListing(path, f"bad JSON: {exc}") from None
    if not isinstance(items, list):
        raise UnrecognisedListing(path, "JSON that is not an array")
    entries = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise UnrecognisedListing(path, f"JSON entry without a name: {item!r:.80}")
        name = item["name"]
        if name in (".", ".."):
            continue
        entries.append(DirEntry(name, _JSON_TYPES.get(str(item.get("type")), FileType.UNKNOWN)))
    return entries


def _entry_from_href(href: str) -> DirEntry | None:
    href = html.unescape(href)
    if "?" in href or href.startswith(("/", "../")) or "://" in href:
        return None  # sort links, the parent, absolute links: not entries
    is_dir = href.endswith("/")
    name = unquote(href.rstrip("/"), errors="surrogateescape")
    if not name or "/" in name or name in (".", ".."):
        return None
    return DirEntry(name, FileType.DIRECTORY if is_dir else FileType.REGULAR)


def _parse_python_html(text: str) -> list[DirEntry]:
    entries = []
    for href, _display in _PYTHON_ITEM.findall(text):
        entry = _entry_from_href(href)
        if entry is not None:
            entries.append(entry)
    return entries


def _parse_nginx_html(text: str) -> list[DirEntry]:
    entries = []
    for href in _NGINX_ITEM.findall(text):
        entry = _entry_from_href(href)
        if entry is not None:
            entries.append(entry)
    return entries
