"""What ``aviary simulate validate`` measures and predicts: its settings, rows and report.

The constants of the method (tolerance, repeats, the Figure 7 operations), the
round-trip times it accepts, and the dataclasses that carry one setting's
measurements and each stage's or operation's measured-beside-predicted row.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from simulation.network import parse_network
from simulation.protocols import ProtocolModel
from simulation.workloads import AndrewStage

__all__ = [
    "FIGURE7_OPERATIONS",
    "TOLERANCE",
    "Row",
    "Setting",
    "ValidationError",
    "ValidationReport",
    "parse_rtts",
    "rtt_label",
]

TOLERANCE = 0.15  # the goal: within 15% per stage
MAX_RTT = 0.1  # seconds: the slowest setting accepted (a 60-file run at 100 ms takes ~10 min)
#: The link moves bytes at veth/loopback speed; what a byte costs the server is inside the
#: service time, measured with 8 KB payloads.
LINK_BANDWIDTH = 1e12
PING_COUNT = 30  # echoes per setting
FIGURE7_RUNS = 20  # timed calls per operation and setting
WARMUP = 3  # untimed calls before each timed series
#: Runs at RTT 0 whose median per stage gives the client's time: their noise is in every prediction.
CALIBRATION_REPEAT = 3
SMALL = 8192
#: The Figure 7 columns this validation measures, as the model's operations (op, payload bytes).
FIGURE7_OPERATIONS: dict[str, tuple[tuple[str, int], ...]] = {
    "stat": (("stat", 0),),
    "open/close": (("open", 0), ("close", 0)),
    "read 1B": (("pread", 1),),
    "read 8KB": (("pread", SMALL),),
    "write 8KB": (("pwrite", SMALL),),
}
#: Protocols whose whole conversation is one TCP connection: the relay carries them.
#: FTP's data connections go to ports the relay would have to know in advance.
RELAYED_PROTOCOLS = ("chirp", "sftp", "root", "dav")


class ValidationError(RuntimeError):
    """The validation cannot run or a run failed; the message says which and why."""


# -- the settings ----------------------------------------------------------------------------


def parse_rtts(text: str) -> list[float]:
    """``0,2ms,10ms`` -> round-trip times in seconds (0 allowed; at least two, all different).

    Raises:
        ValueError: the message says what is wrong.
    """

    values: list[float] = []
    for item in (part.strip() for part in text.split(",")):
        if item in ("0", "0ms", "0us", "0s"):
            values.append(0.0)
            continue
        try:
            values.append(parse_network(item))
        except argparse.ArgumentTypeError as exc:
            raise ValueError(str(exc)) from None
    if len(values) < 2 or len(set(values)) != len(values):
        raise ValueError(f"need two or more different round-trip times, not {text!r}")
    if max(values) > MAX_RTT:
        raise ValueError(f"round-trip times above {MAX_RTT * 1e3:.0f} ms take too long to run")
    return sorted(values)


def rtt_label(rtt: float) -> str:
    return "0" if rtt == 0 else f"{rtt * 1e3:g} ms"


# -- the results -------------------------------------------------------------------------------


@dataclass
class Row:
    """One stage or operation at one setting: measured beside predicted."""

    setting: str
    nominal_rtt_ms: float
    network_rtt_ms: float  # what the echo measured through the relay
    kind: str  # "andrew" or "figure7"
    name: str
    measured_s: float
    predicted_s: float
    predicted_nominal_s: float  # the model at the nominal RTT plus the RTT-0 path
    error_pct: float = field(init=False)
    within: bool = field(init=False)
    note: str = ""

    def __post_init__(self) -> None:
        self.error_pct = (self.predicted_s - self.measured_s) / self.measured_s * 100
        self.within = abs(self.error_pct) <= TOLERANCE * 100


@dataclass
class Setting:
    """One round-trip time: what was measured there."""

    nominal_rtt_s: float
    network_rtt_s: float  # the mean of the echoes before and after the runs
    andrew_s: dict[str, float]  # median over the repeats
    andrew_runs_s: dict[str, list[float]]
    same_as_native: dict[str, bool]
    remote_calls: dict[str, int]  # from the run's trace: calls that reached the server
    remote_s: dict[str, float]  # the agent's seconds in them
    figure7_s: dict[str, float]
    #: Per stage and system call (``list/newfstatat``): (calls, the agent's mean seconds in one).
    syscalls: dict[str, tuple[int, float]] = field(default_factory=dict)
    echo_rtts_s: tuple[float, float] = (0.0, 0.0)  # before the Figure 7 calls; after the runs


@dataclass
class ValidationReport:
    protocol: str
    server: str
    files: int
    repeat: int
    base_rtt_s: float  # the echo's RTT through the relay with no added latency
    model: ProtocolModel
    stages: list[AndrewStage]
    calibration_run_s: dict[str, float]
    client_s: dict[str, float]  # per stage: the calibration run less the model's remote time
    settings: list[Setting] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    figure7_runs: int = FIGURE7_RUNS

    @property
    def within(self) -> int:
        return sum(1 for r in self.rows if r.within)
