"""``aviary report``: runs the benchmarks, the conformance suite and the simulation,
and writes every table and plot with the seeds' numbers beside ours (``site``).

``figure7`` measures one operation per protocol (the seeds' Figure 7).
"""
