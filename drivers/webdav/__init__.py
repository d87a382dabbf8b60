"""WebDAV: PROPFIND, GET with Range, PUT, MKCOL, MOVE and DELETE, writes staged and sent on close.

The blocking driver is in ``_driver``, PROPFIND bodies and the multistatus
reader in ``_multistatus``; the HTTP/1.1 core it shares with the HTTP driver
is ``drivers._http``.
"""

from drivers.webdav._driver import DAV_PORT, WebDavDriver
from drivers.webdav._multistatus import DavResource, parse_multistatus

__all__ = ["DAV_PORT", "DavResource", "WebDavDriver", "parse_multistatus"]
