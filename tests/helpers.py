"""Small helpers shared by the test modules."""

from __future__ import annotations

import errno


def errno_name(call: object, *args: object) -> str | None:
    """The errno name ``call(*args)`` fails with ("ENOENT"), or None if it succeeds."""
    assert callable(call)
    try:
        call(*args)
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return None
