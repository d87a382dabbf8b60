"""HTTP, read-only: HEAD for stat, Range GET for reads, the server's index for listings.

The blocking driver is in ``_driver``, the readers of the listing pages that
servers generate in ``_listing``; the HTTP/1.1 core it shares with the WebDAV
driver is ``drivers._http``.
"""

from drivers.http._driver import HTTP_PORT, HttpDriver
from drivers.http._listing import ListingFormat, parse_listing

__all__ = ["HTTP_PORT", "HttpDriver", "ListingFormat", "parse_listing"]
