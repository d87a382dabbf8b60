"""Benchmarks of the agent and the drivers against native and peers (``aviary bench``).

``common`` holds targets, repeats, spread and the machine description;
``micro`` the per-syscall costs (Figure 3); ``latency`` one operation per protocol
(Figure 7); ``throughput`` bandwidth by block size (Figure 6); ``andrew`` the
Andrew-like benchmark (Figure 8); ``sp5`` the SP5 scenario; ``seeds_data`` the
seeds' published numbers they are compared with.
"""
