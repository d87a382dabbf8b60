"""Fault injection between client and server (issue 6: not built yet)."""
