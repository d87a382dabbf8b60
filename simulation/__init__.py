"""Calibrated simpy models of the seeds' workloads over LAN and WAN (``aviary simulate``).

``protocols`` holds what each operation costs per protocol (measured from the real
drivers' counters, or parameterised from the seeds where servers no longer exist);
``model`` the network, server and client processes; ``workloads`` the Andrew-like
replay and SP5; ``run`` the experiments and their tables.
"""
