"""pytest fixtures: a test states its fault in one line, and everything is removed after.

Use (import the fixture into the test module, or list this module in ``pytest_plugins``)::

    from faultnet.pytest_plugin import faultnet  # noqa: F401  (a fixture)

    def test_nat(faultnet, chirp_server):
        net = faultnet("kernel", chirp_server, idle_timeout=2)   # the fault, in one line
        ...

The fixture brings the back-end up between the test and ``server`` (anything
with ``host`` and ``port``) and applies the named faults (``idle_timeout``,
``delay``, ``jitter``, ``bandwidth``, ``new_connections``). Teardown runs
even when the test fails; an interrupted run leaves nothing either: the
kernel back-end's namespaces die with their holder process, whose stdin is a
pipe from this process, and the proxy is a thread of this process. A back-end
this machine cannot run skips the test (fails it under ``CI``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Protocol

import pytest

from faultnet.backends import ProxyNet, open_faultnet
from faultnet.faults import NewConnections
from faultnet.kernel import KernelNet

__all__ = ["faultnet"]


class _Endpoint(Protocol):
    host: str
    port: int


MakeFaultNet = Callable[..., ProxyNet | KernelNet]


@pytest.fixture
def faultnet() -> Iterator[MakeFaultNet]:
    """A factory: ``faultnet(backend, server, **faults)`` -> a back-end that is up."""
    opened: list[ProxyNet | KernelNet] = []

    def make(
        backend: str,
        server: _Endpoint,
        *,
        idle_timeout: float | None = None,
        delay: float = 0.0,
        jitter: float = 0.0,
        bandwidth: float | None = None,
        new_connections: NewConnections = NewConnections.ACCEPT,
    ) -> ProxyNet | KernelNet:
        if backend == "kernel":
            reason = KernelNet.missing()
            if reason is not None:
                if os.environ.get("CI"):
                    pytest.fail(f"faultnet kernel back-end is required in CI: {reason}")
                pytest.skip(f"faultnet kernel back-end unavailable: {reason}")
        net = open_faultnet(backend, (server.host, server.port))
        opened.append(net)
        net.up()
        if idle_timeout is not None:
            net.set_idle_timeout(idle_timeout)
        if delay or jitter:
            net.delay(delay, jitter)
        if bandwidth is not None:
            net.bandwidth(bandwidth)
        if new_connections is not NewConnections.ACCEPT:
            net.new_connections(new_connections)
        return net

    try:
        yield make
    finally:
        for net in reversed(opened):
            net.down()
