"""Per-operation traffic counters that every driver keeps.

Strategy: the driver's I/O shell reports raw events (a round trip finished, a
connection was opened, N bytes went out) to one ``DriverCounters`` object, and
the counters attribute them to the operation that is currently running. The
driver marks that operation with ``with counters.operation("stat"):``; events
outside any operation go to the pseudo-operation ``"(connect)"`` so that no
byte is silently dropped from the totals.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

__all__ = ["DriverCounters", "OpCounters"]

#: Where events land that happen outside any named operation.
UNATTRIBUTED = "(connect)"


@dataclass(slots=True)
class OpCounters:
    """What one kind of operation cost, summed over its calls."""

    calls: int = 0
    round_trips: int = 0
    connections: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    errors: int = 0

    def add(self, other: OpCounters) -> None:
        self.calls += other.calls
        self.round_trips += other.round_trips
        self.connections += other.connections
        self.bytes_sent += other.bytes_sent
        self.bytes_received += other.bytes_received
        self.errors += other.errors

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class DriverCounters:
    """Counters keyed by operation kind ("stat", "open", "pread", ...)."""

    def __init__(self) -> None:
        self._ops: dict[str, OpCounters] = {}
        self._current: list[str] = []
        #: Operations begun since the driver was made; never reset (a driver can tell
        #: whether anything was asked of it between two of its own calls).
        self.begun = 0

    def _now(self) -> OpCounters:
        name = self._current[-1] if self._current else UNATTRIBUTED
        return self._ops.setdefault(name, OpCounters())

    @contextmanager
    def operation(self, name: str) -> Iterator[OpCounters]:
        """Attribute everything inside the block to operation ``name``.

        Nested operations (a driver's ``read_file`` calling ``pread``) are
        attributed to the innermost one.
        """
        entry = self._ops.setdefault(name, OpCounters())
        entry.calls += 1
        self.begun += 1
        self._current.append(name)
        try:
            yield entry
        except BaseException:
            entry.errors += 1
            raise
        finally:
            self._current.pop()

    def made_elsewhere(self, name: str, calls: int, sent: int, received: int) -> None:
        """``calls`` operations ``name`` of one round trip each, made on this driver's
        connection by someone else (compiled code given its socket), counted as its own
        (and as begun: something was asked of the driver)."""
        self.begun += calls
        entry = self._ops.setdefault(name, OpCounters())
        entry.calls += calls
        entry.round_trips += calls
        entry.bytes_sent += sent
        entry.bytes_received += received

    def round_trip(self, count: int = 1) -> None:
        self._now().round_trips += count

    def connection_opened(self) -> None:
        self._now().connections += 1

    def sent(self, nbytes: int) -> None:
        self._now().bytes_sent += nbytes

    def received(self, nbytes: int) -> None:
        self._now().bytes_received += nbytes

    def snapshot(self) -> dict[str, OpCounters]:
        """A copy of the counters, safe to keep while the driver goes on."""
        return {name: OpCounters(**c.as_dict()) for name, c in self._ops.items()}

    def total(self) -> OpCounters:
        result = OpCounters()
        for c in self._ops.values():
            result.add(c)
        return result

    def reset(self) -> None:
        self._ops.clear()

    @staticmethod
    def difference(
        after: dict[str, OpCounters], before: dict[str, OpCounters]
    ) -> dict[str, OpCounters]:
        """What happened between two snapshots, per operation."""
        result: dict[str, OpCounters] = {}
        for name, a in after.items():
            b = before.get(name, OpCounters())
            delta = OpCounters(
                calls=a.calls - b.calls,
                round_trips=a.round_trips - b.round_trips,
                connections=a.connections - b.connections,
                bytes_sent=a.bytes_sent - b.bytes_sent,
                bytes_received=a.bytes_received - b.bytes_received,
                errors=a.errors - b.errors,
            )
            if any(delta.as_dict().values()):
                result[name] = delta
        return result
