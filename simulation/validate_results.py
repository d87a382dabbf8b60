"""What ``aviary simulate validate`` measures and predicts: its settings, rows and report.

The constants of the method (tolerance, repeats, the Figure 7 operations), the
round-trip times it accepts, and the dataclasses that carry one setting's
measurements and each stage's or operation's measured-beside-predicted row.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from simulation.agent_path import AgentPath, PathPoint
from simulation.network import parse_network
from simulation.protocols import ProtocolModel
from simulation.workloads import AndrewStage

__all__ = [
    "FIGURE7_OPERATIONS",
    "TOLERANCE",
    "Calibration",
    "Row",
    "Setting",
    "ValidationError",
    "ValidationReport",
    "parse_rtts",
    "rtt_label",
]

TOLERANCE = 0.15  # the largest error a row may have, as a fraction of the measured time
MAX_RTT = 0.1  # seconds: the slowest setting accepted (a 60-file run at 100 ms takes ~10 min)
#: The link moves bytes at veth/loopback speed; what a byte costs the server is inside the
#: service time, measured with 8 KB payloads.
LINK_BANDWIDTH = 1e12
PING_COUNT = 30  # echoes per probe (the median is the round trip of one call)
FIGURE7_RUNS = 20  # timed calls per operation and setting
FIGURE7_BLOCK = 4  # timed calls in a row before the latency is switched off or on again
WARMUP = 3  # untimed calls before each timed series
REPEAT = 5  # measured runs per setting, each between two calibrations (the median is compared)
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
    """One stage or operation at one setting: measured beside predicted, over the repeats.

    ``measured_s`` and ``predicted_s`` are the medians of the repeats, each repeat
    predicted from the calibrations made just before and just after it.
    """

    setting: str
    nominal_rtt_ms: float
    network_rtt_ms: float  # the link RTT the model was given (median over the repeats)
    kind: str  # "andrew" or "figure7"
    name: str
    measured_s: float
    predicted_s: float
    predicted_nominal_s: float  # the model at the nominal RTT plus the RTT-0 path
    measured_runs_s: list[float] = field(default_factory=list)
    predicted_runs_s: list[float] = field(default_factory=list)
    #: Where the model's time goes and what the runs said, per term (stages only): see
    #: ``StageTerms``; medians over the repeats.
    terms: dict[str, float] = field(default_factory=dict)
    error_pct: float = field(init=False)
    within: bool = field(init=False)
    note: str = ""

    def __post_init__(self) -> None:
        self.error_pct = (self.predicted_s - self.measured_s) / self.measured_s * 100
        self.within = abs(self.error_pct) <= TOLERANCE * 100

    @property
    def pair_errors_pct(self) -> list[float]:
        """Each repeat's error against the prediction from its own calibrations."""
        return [
            (p - m) / m * 100
            for p, m in zip(self.predicted_runs_s, self.measured_runs_s, strict=True)
        ]


@dataclass
class Calibration:
    """One calibration at RTT 0, made between the measured runs: what the model is given."""

    index: int
    echo_rtt_s: float  # median echo through the relay before the driver's calibration
    run_rtt_s: float  # mean echo just before and just after the Andrew-like run
    load: float  # one-minute load average after it
    model: ProtocolModel  # the driver's operations, measured once
    stages: list[AndrewStage]  # each stage's driver operations, from the run's trace
    run_s: dict[str, float]  # the Andrew-like run's stage times
    client_s: dict[str, float]  # run_s less the model's remote time at run_rtt_s
    round_trips: dict[str, int]  # the trace's round trips per stage


@dataclass
class Setting:
    """One measured run at one round-trip time, with the calibrations either side of it."""

    nominal_rtt_s: float
    repetition: int
    network_rtt_s: float  # median echo among the Figure 7 calls
    run_rtt_s: float  # mean echo just before and just after the Andrew-like run
    andrew_s: dict[str, float]
    same_as_native: dict[str, bool]
    remote_calls: dict[str, int]  # from the run's trace: calls that reached the server
    remote_s: dict[str, float]  # the agent's seconds in them
    round_trips: dict[str, int]  # the trace's round trips per stage
    figure7_s: dict[str, float]
    #: The same calls at RTT 0, alternating with them (their calibration), and the echo there.
    figure7_base_s: dict[str, float]
    figure7_base_rtt_s: float
    calibrations: tuple[int, int]  # the calibrations before and after
    load: tuple[float, float]  # one-minute load average before and after
    #: Per stage and system call (``list/newfstatat``): (calls, the agent's mean seconds in one).
    syscalls: dict[str, tuple[int, float]] = field(default_factory=dict)
    #: The echoes among the Figure 7 calls, with the latency and at RTT 0: the link's RTT as
    #: a distribution, not one number.
    echo_samples_s: list[float] = field(default_factory=list)
    echo_base_samples_s: list[float] = field(default_factory=list)
    #: What a round trip through the agent costs beyond the echo at this RTT, measured by
    #: the probe just before the Andrew-like run (none at RTT 0: zero by construction).
    agent_path: PathPoint | None = None


@dataclass
class ValidationReport:
    protocol: str
    server: str
    files: int
    repeat: int
    base_rtt_s: float  # the echo's RTT through the relay with no added latency (median)
    model: ProtocolModel  # the median of the calibrations' models (shown; each pair uses its own)
    stages: list[AndrewStage]
    calibration_run_s: dict[str, float]  # median over the calibrations
    client_s: dict[str, float]  # median over the calibrations
    calibrations: list[Calibration] = field(default_factory=list)
    settings: list[Setting] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    figure7_runs: int = FIGURE7_RUNS
    load_start: float = 0.0  # one-minute load average when the run began
    load_end: float = 0.0
    #: The path term fitted through every setting's probe (``excess = a + b * RTT``).
    agent_path: AgentPath | None = None
    #: The calibration file's own path term, and what is wrong with the file here.
    recorded_agent_path: AgentPath | None = None
    calibration_problems: list[str] = field(default_factory=list)

    @property
    def within(self) -> int:
        return sum(1 for r in self.rows if r.within)
