"""The POSIX conformance suite, ``pytest conformance --driver NAME``."""
