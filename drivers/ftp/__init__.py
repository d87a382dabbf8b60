"""FTP: a client driver for RFC 959 servers, with the seeds' error interview.

The reply grammar and the control connection's state machine are in
``_events``/``_connection`` (sans-I/O), the verb table and reply parsers in
``_verbs``, listings and stat results in ``_listing``, the errno interview in
``_interview``, the blocking sockets in ``_shell``, the questions a call asks
before it acts (lookups, listings, stat) in ``_questions``, the open handles and
the transfers that fill and send their bytes (RETR, STOR, APPE) in
``_transfers``, and the driver interface in ``_driver`` (whose docstring lists
what FTP cannot do).
"""

from drivers.ftp._driver import FtpDriver

__all__ = ["FtpDriver"]
