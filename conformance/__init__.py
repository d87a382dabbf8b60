"""The POSIX conformance suite, ``pytest conformance --driver NAME`` (issue 4: not built yet)."""
