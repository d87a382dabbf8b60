"""PROPFIND requests and the 207 Multi-Status replies they get (RFC 4918 sections 9.1, 13).

A PROPFIND names the properties we want; the reply holds one ``response``
per resource (the target, and for ``Depth: 1`` its members), each with an
``href`` and one ``propstat`` per status: properties the server has come under
``200 OK``, the ones it lacks under ``404``. Only the 200 ones are read.

Servers differ in what they say (see ../shared/references/SERVERS.md):
nginx's dav-ext leaves dotfiles out of Depth 1 and answers 500 for a whole
directory when one member is a dangling symlink; wsgidav leaves symlinks out
and reports quota properties, which :class:`DavResource` keeps for statfs.

XML is parsed with ``xml.etree.ElementTree`` from the standard library; a
reply that is not well-formed is a protocol error (EPROTO), never an empty
listing. The expat under it refuses external entities and, since 2.4.1,
limits entity expansion, so a hostile server cannot make us read local files
or blow up memory with nested entities.

Hrefs may come as absolute paths (nginx, wsgidav) or absolute URLs (RFC 4918
allows both); either way they are percent-decoded into the driver's paths,
and a collection's trailing slash is dropped (``/d/`` is ``/d``).
"""

from __future__ import annotations

import errno
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from drivers._http._files import http_date_ns, path_from_href

__all__ = [
    "PROPFIND_BODY",
    "DavResource",
    "MultistatusError",
    "parse_multistatus",
]

DAV = "{DAV:}"

#: The properties a stat or a listing needs, plus RFC 4331 quotas for statfs.
PROPFIND_BODY = (
    b'<?xml version="1.0" encoding="utf-8"?>'
    b'<D:propfind xmlns:D="DAV:"><D:prop>'
    b"<D:resourcetype/><D:getcontentlength/><D:getlastmodified/><D:getetag/>"
    b"<D:quota-available-bytes/><D:quota-used-bytes/>"
    b"</D:prop></D:propfind>"
)


class MultistatusError(OSError):
    """A 207 reply that is not a multistatus we can read (EPROTO)."""

    def __init__(self, detail: str, path: str | None = None) -> None:
        super().__init__(errno.EPROTO, f"bad PROPFIND reply: {detail}", path)


@dataclass(frozen=True, slots=True)
class DavResource:
    """What a PROPFIND said about one resource."""

    path: str  # the driver path, from the href, without a trailing slash
    status: int  # 200, or the status the server gave this member (404, 403...)
    is_dir: bool = False
    size: int | None = None
    mtime_ns: int | None = None
    quota_available: int | None = None
    quota_used: int | None = None
    etag: str | None = None  # getetag, where the server gives it

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


def _status_code(text: str | None) -> int | None:
    """The code in an RFC 9112 status line such as "HTTP/1.1 200 OK"."""
    if not text:
        return None
    parts = text.split()
    if len(parts) >= 2 and parts[1].isdigit():
        return int(parts[1])
    return None


def _integer(element: ET.Element | None) -> int | None:
    if element is None or element.text is None:
        return None
    text = element.text.strip()
    return int(text) if text.isdigit() else None


def _resource(response: ET.Element) -> DavResource:
    href = response.findtext(f"{DAV}href")
    if href is None or not href.strip():
        raise MultistatusError("a response without an href")
    path = path_from_href(href.strip())
    whole_status = _status_code(response.findtext(f"{DAV}status"))
    if whole_status is not None and whole_status != 200:
        return DavResource(path, whole_status)
    found: dict[str, ET.Element] = {}
    seen_ok = False
    for propstat in response.findall(f"{DAV}propstat"):
        if _status_code(propstat.findtext(f"{DAV}status")) != 200:
            continue
        seen_ok = True
        prop = propstat.find(f"{DAV}prop")
        for child in prop if prop is not None else ():
            found[child.tag] = child
    if not seen_ok:
        return DavResource(path, whole_status or 404)
    kind = found.get(f"{DAV}resourcetype")
    is_dir = kind is not None and kind.find(f"{DAV}collection") is not None
    modified = found.get(f"{DAV}getlastmodified")
    return DavResource(
        path,
        200,
        is_dir=is_dir,
        size=_integer(found.get(f"{DAV}getcontentlength")),
        mtime_ns=http_date_ns(modified.text if modified is not None else None),
        quota_available=_integer(found.get(f"{DAV}quota-available-bytes")),
        quota_used=_integer(found.get(f"{DAV}quota-used-bytes")),
        etag=(found[f"{DAV}getetag"].text or "").strip() or None
        if f"{DAV}getetag" in found
        else None,
    )


def parse_multistatus(body: bytes, path: str | None = None) -> list[DavResource]:
    """Every resource in a 207 reply, in the server's order.

    Raises:
        MultistatusError: the body is not a well-formed DAV multistatus.
    """
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise MultistatusError(str(exc), path) from None
    if root.tag != f"{DAV}multistatus":
        raise MultistatusError(f"root element {root.tag!r}", path)
    return [_resource(response) for response in root.findall(f"{DAV}response")]
