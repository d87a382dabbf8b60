"""The harness: the ``aviary`` CLI, real-server fixtures, benchmarks and reports.

It sits beside the data path (agent -> driver -> server) and drives it;
nothing in ``drivers`` or ``reference_agent`` imports it.
"""
