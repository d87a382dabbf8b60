"""A sans-I/O HTTP/1.1 client core in h11's style, and a blocking shell around it.

``_events`` holds the events and errors, ``_connection`` the state machine
with the request writer and the response readers (Content-Length, chunked,
read-until-close), ``_client`` the blocking I/O shell with one kept-alive
connection, deadlines and counters. The ``http`` and ``webdav`` drivers share it.
"""

from drivers._http._connection import MAX_HEAD_BYTES, HttpConnection, State
from drivers._http._events import (
    NEED_DATA,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Event,
    Headers,
    InformationalResponse,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    Request,
    Response,
    header_value,
    header_values,
)
from drivers._http._shell import HttpClient, HttpReply

__all__ = [
    "MAX_HEAD_BYTES",
    "NEED_DATA",
    "ConnectionClosed",
    "Data",
    "EndOfMessage",
    "Event",
    "Headers",
    "HttpClient",
    "HttpConnection",
    "HttpReply",
    "InformationalResponse",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
    "Request",
    "Response",
    "State",
    "header_value",
    "header_values",
]
