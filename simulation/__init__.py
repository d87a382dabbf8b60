"""Calibrated models of the seeds' workloads over LAN and WAN (``aviary simulate``).

``protocols`` holds what each operation costs per protocol (measured from the real
drivers' counters, or parameterised from the seeds where servers no longer exist);
``model`` the network, server and client processes; ``workloads`` the Andrew-like
replay and SP5; ``run`` the simpy experiments; ``fleet`` the same SP5 model without
simpy, for up to a million workers; ``distributed`` sweeps and runs on Dask;
``figure10`` and ``figure8`` the seeds' figures from first principles, beside theirs.
See docs/simulation.md.
"""
