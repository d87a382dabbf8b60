"""Figure 10 (SP5 over LAN and WAN) from first principles, beside the seeds' numbers.

Covers: what one SP5 run costs, piece by piece, on the seeds' 2004 machines:
the program's CPU (scaled by the node's clock), the agent's trapping (CPU too),
the Chirp server's work per request (the same-host rows), and on the network
the round trip plus the transfer of one Objectivity page per request. The
NAT's recovery cost (the client's fail-fast timeout, a reconnect, a reopen
and inode check per open file) is paid when the connection idles longer than
the NAT keeps flows.

Scenario: the same-host rows give the CPU and per-request costs; the LAN row
fixes how many pages SP5 reads (the one number the seeds do not print); the
WAN row is then a prediction, set beside the seeds' with the error. The
break-even points are computed from the model's own numbers.

Derivation (seconds, 1 GHz unless said):

- ``init = (CPU + agent) / GHz + R_init * (server + RTT + page / bandwidth)``
- ``event = (CPU + agent) / GHz + R_event * (server + RTT + page / bandwidth)
  + NAT recovery if the idle gap (the event's CPU) exceeds the NAT's timeout``
"""

from __future__ import annotations

from dataclasses import dataclass

from simulation.seeds_sp5 import (
    AGENT_EVENT_S,
    AGENT_INIT_S,
    BANDWIDTH,
    CHIRP_EVENT_S,
    CHIRP_INIT_S,
    CLIENT_TIMEOUT,
    EVENT_CPU_S,
    EVENT_PAGES,
    INIT_CPU_S,
    INIT_PAGES,
    LAN_INIT_S,
    LAN_RTT,
    NAT_TIMEOUT,
    OPEN_FILES,
    PAGE_BYTES,
    PAGE_WIRE_BYTES,
    REOPEN_ROUND_TRIPS,
    REQUEST_WIRE_BYTES,
    SERVER_S_PER_PAGE,
    WAN_GHZ,
    WAN_RTT,
    network_per_page,
    seeds_chirp,
    seeds_job_fields,
)

__all__ = [
    "FIGURE10_ROWS",
    "PAGE_WIRE_BYTES",
    "Figure10Row",
    "amortisation_events",
    "crossover_events",
    "figure10_rows",
    "seeds_chirp",
    "seeds_job_fields",
]


def nat_recovery_s(rtt: float) -> float:
    """Seconds one NAT drop costs: the fail-fast timeout, a reconnect, reopens with inode checks."""
    reconnect = 4 * rtt  # SYN and Chirp's authentication
    reopen = OPEN_FILES * REOPEN_ROUND_TRIPS * (rtt + SERVER_S_PER_PAGE)
    return CLIENT_TIMEOUT + reconnect + reopen


@dataclass(frozen=True)
class Figure10Row:
    """One row of Figure 10: the model's numbers, the seeds', and why they differ."""

    label: str
    ghz: float
    rtt: float | None  # None: same host
    init_s: float
    event_s: float
    seeds_init: tuple[float, float]  # (mean, standard deviation)
    seeds_event: float
    role: str  # "input" (a row the model's parameters come from) or "prediction"
    note: str = ""

    @property
    def init_error(self) -> float:
        return self.init_s / self.seeds_init[0] - 1

    @property
    def event_error(self) -> float:
        return self.event_s / self.seeds_event - 1

    @property
    def init_within(self) -> bool:
        return abs(self.init_s - self.seeds_init[0]) <= self.seeds_init[1]


def _remote(rtt: float | None, pages: float, server_s: float) -> float:
    return server_s + (pages * network_per_page(rtt) if rtt is not None else 0.0)


def model_row(
    ghz: float, rtt: float | None, nat_timeout: float | None = None
) -> tuple[float, float]:
    """(init seconds, seconds per event) of SP5 under the agent over Chirp.

    Args:
        ghz: the node's clock.
        rtt: the round trip to the server (None: the same host).
        nat_timeout: a NAT on the path that forgets idle flows after this many seconds.
    """
    init = (INIT_CPU_S + AGENT_INIT_S) / ghz + _remote(rtt, INIT_PAGES, CHIRP_INIT_S)
    event_cpu = (EVENT_CPU_S + AGENT_EVENT_S) / ghz
    event = event_cpu + _remote(rtt, EVENT_PAGES, CHIRP_EVENT_S)
    # The event's reads come first; the output write waits out the CPU burst, idle.
    if nat_timeout is not None and rtt is not None and event_cpu > nat_timeout:
        event += nat_recovery_s(rtt)
    return init, event


#: The seeds' Figure 10 rows the model covers: (label, GHz, RTT, init mean, init sd, event).
FIGURE10_ROWS: tuple[tuple[str, float, float | None, float, float, float], ...] = (
    ("same, os, files", 1.0, None, 446.0, 46.0, 64.0),
    ("same, parrot, files", 1.0, None, 668.0, 26.0, 65.0),
    ("same, parrot, chirp", 1.0, None, 777.0, 48.0, 66.0),
    ("lan, parrot, chirp", 1.0, LAN_RTT, 4505.0, 155.0, 113.0),
    ("wan, parrot, chirp", WAN_GHZ, WAN_RTT, 6275.0, 330.0, 88.0),
)


def figure10_rows() -> list[Figure10Row]:
    """Every row of Figure 10 the model covers, with the seeds' numbers and the error."""
    rows = []
    for label, ghz, rtt, init_mean, init_sd, event in FIGURE10_ROWS:
        if label == "same, os, files":
            init_s, event_s = INIT_CPU_S / ghz, EVENT_CPU_S / ghz
        elif label == "same, parrot, files":
            init_s, event_s = (INIT_CPU_S + AGENT_INIT_S) / ghz, (EVENT_CPU_S + AGENT_EVENT_S) / ghz
        else:
            init_s, event_s = model_row(ghz, rtt, NAT_TIMEOUT if label.startswith("wan") else None)
        role = "prediction" if label.startswith("wan") else "input"
        note = _wan_event_note(event_s) if role == "prediction" else "a parameter of the model"
        rows.append(Figure10Row(label, ghz, rtt, init_s, event_s, (init_mean, init_sd), event,
                                role, note))  # fmt: skip
    return rows


def _wan_event_note(event_s: float) -> str:
    """Why the WAN event differs from the seeds' 88 s, in numbers."""
    cpu = (EVENT_CPU_S + AGENT_EVENT_S) / WAN_GHZ + CHIRP_EVENT_S
    streamed = cpu + EVENT_PAGES * (PAGE_WIRE_BYTES + REQUEST_WIRE_BYTES) / BANDWIDTH
    share = (88.0 - streamed) / (event_s - streamed) if event_s > streamed else 0.0
    return (
        f"the event's {EVENT_PAGES:,.0f} page reads (fixed by the LAN row) each pay the WAN's "
        f"654 us round trip: {event_s:.0f} s. Streamed (read-ahead hiding the round trip) they "
        f"would take {streamed:.0f} s; the seeds' 88 s means about {share:.0%} of the event's "
        f"reads paid a round trip. The event's {cpu - CHIRP_EVENT_S:.0f} s of CPU stays under "
        f"the NAT's {NAT_TIMEOUT:.0f} s, so no recovery is paid (a 1 GHz node would pay "
        f"{nat_recovery_s(WAN_RTT):.1f} s per event)"
    )


def amortisation_events(init_s: float, event_s: float) -> float:
    """Events after which computing them has cost as much as initialising (the seeds' "70 events")."""
    return init_s / event_s


def crossover_events(near: tuple[float, float], far: tuple[float, float]) -> float | None:
    """Events after which ``far`` (slower start, faster events) has done more; None: never.

    Args:
        near: (init, per event) of the node that starts first.
        far: (init, per event) of the other.
    """
    if far[1] >= near[1]:
        return None
    return (far[0] - near[0]) / (near[1] - far[1])


def simulated_rows(events: int = 5) -> dict[str, tuple[float, float]]:
    """LAN and WAN rows run through the event simulation (one worker): it agrees with the formula."""
    from simulation.fleet import simulate_fleet
    from simulation.workloads import Sp5Job

    rows = {}
    for label, ghz, rtt, nat in (
        ("lan", 1.0, LAN_RTT, None),
        ("wan", WAN_GHZ, WAN_RTT, NAT_TIMEOUT),
    ):
        fields = seeds_job_fields()
        job = Sp5Job(init_cpu_s=float(fields["init_cpu_s"]), init_rpcs=int(fields["init_rpcs"]),
                     event_cpu_s=float(fields["event_cpu_s"]), event_reads=int(fields["event_reads"]),
                     events=events, cpu_ghz=ghz)  # fmt: skip
        result = simulate_fleet(seeds_chirp(), job, rtt, 1, nat, client_timeout=CLIENT_TIMEOUT,
                                bandwidth=BANDWIDTH)  # fmt: skip
        rows[label] = (
            result.init_seconds[0],
            sum(result.event_seconds) / len(result.event_seconds),
        )
    return rows


def figure10_markdown() -> str:
    """Figure 10, model beside seeds, with the derivation and the break-even points."""
    rows = figure10_rows()
    lines = [
        "| row | CPU | init, model (s) | init, seeds (s) | error | within the seeds' sd | "
        "per event, model (s) | per event, seeds (s) | error | role and note |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.label} | {row.ghz:g} GHz | {row.init_s:.0f} | {row.seeds_init[0]:.0f} ± "
            f"{row.seeds_init[1]:.0f} | {row.init_error:+.1%} | {'yes' if row.init_within else 'no'} | "
            f"{row.event_s:.1f} | {row.seeds_event:.0f} | {row.event_error:+.1%} | "
            f"{row.role}: {row.note} |"
        )
    lan = model_row(1.0, LAN_RTT)
    wan = model_row(WAN_GHZ, WAN_RTT, NAT_TIMEOUT)
    crossover = crossover_events(lan, wan)
    per_page_lan = network_per_page(LAN_RTT) + SERVER_S_PER_PAGE
    per_page_wan = network_per_page(WAN_RTT) + SERVER_S_PER_PAGE
    transfer = (PAGE_WIRE_BYTES + REQUEST_WIRE_BYTES) / BANDWIDTH
    simulated = simulated_rows()
    lines += [
        "",
        "**How the model gets there** (seconds at 1 GHz unless said):",
        "",
        f"- CPU: SP5 initialises in {INIT_CPU_S:.0f} s and computes an event in {EVENT_CPU_S:.0f} s "
        f"(row 1); the agent's trapping adds {AGENT_INIT_S:.0f} s and {AGENT_EVENT_S:.0f} s (row 2). "
        f"Both are CPU: the {WAN_GHZ:g} GHz WAN node takes them in 1/{WAN_GHZ:g} of the time.",
        f"- Server: a Chirp server on the same host adds {CHIRP_INIT_S:.0f} s to the initialisation "
        f"(row 3): {SERVER_S_PER_PAGE * 1e6:.0f} us per page read.",
        f"- Network: each read fetches one {PAGE_BYTES} B Objectivity page; with framing "
        f"{PAGE_WIRE_BYTES + REQUEST_WIRE_BYTES} B on a 100 Mb/s link, {transfer * 1e6:.0f} us of "
        f"transfer plus the round trip: {per_page_lan * 1e6:.0f} us per page on the LAN "
        f"(130 us RTT), {per_page_wan * 1e6:.0f} us on the WAN (654 us RTT).",
        f"- Pages: the LAN row's {LAN_INIT_S:.0f} s leaves {LAN_INIT_S - 777:.0f} s of network: "
        f"{INIT_PAGES:,.0f} page reads ({INIT_PAGES * PAGE_BYTES / 2**30:.1f} GiB) in the "
        f"initialisation, {EVENT_PAGES:,.0f} per event. This is the model's one fitted number; "
        "the WAN row is a prediction.",
        f"- NAT: a flow idle longer than {NAT_TIMEOUT:.0f} s is dropped without RST; the next "
        f"request waits out the client's {CLIENT_TIMEOUT:.0f} s fail-fast timeout, reconnects and "
        f"reopens {OPEN_FILES} files with an inode check: {nat_recovery_s(WAN_RTT):.1f} s. An "
        "event's output is written after its CPU burst, so a node whose event CPU exceeds the "
        "timeout pays it once per event: at 1 GHz over the WAN, "
        f"{model_row(1.0, WAN_RTT, NAT_TIMEOUT)[1]:.1f} s per event instead of "
        f"{model_row(1.0, WAN_RTT)[1]:.1f} s.",
        f"- The event simulation (the fleet engine, one worker) gives LAN {simulated['lan'][0]:.0f} s "
        f"and {simulated['lan'][1]:.1f} s per event, WAN {simulated['wan'][0]:.0f} s and "
        f"{simulated['wan'][1]:.1f} s, against the formula's {lan[0]:.0f} s, {lan[1]:.1f} s, "
        f"{wan[0]:.0f} s and {wan[1]:.1f} s (the simulation charges each event page the "
        f"initialisation's {SERVER_S_PER_PAGE * 1e6:.0f} us of server time, "
        f"{EVENT_PAGES * SERVER_S_PER_PAGE:.1f} s where row 3 says {CHIRP_EVENT_S:.0f} s, and "
        "writes the event's 10-100 KB).",
        "",
        "**Break-even, from the model's numbers:**",
        "",
        f"- Over the WAN, the events have cost as much as the initialisation after "
        f"{amortisation_events(*wan):.0f} events (the seeds say 70; with their own numbers "
        f"{6275 / 88:.0f}).",
        "- The far, fast WAN node overtakes the near, slow LAN node after "
        + (f"{crossover:.0f} events." if crossover is not None else "no number of events (never)."),
    ]
    return "\n".join(lines) + "\n"


def figure10_plot(path: object) -> None:
    """Model and seeds side by side per row: initialisation and per event, two panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = figure10_rows()
    labels = [r.label for r in rows]
    figure, (init_axis, event_axis) = plt.subplots(1, 2, figsize=(12, 4.5))
    positions = range(len(rows))
    width = 0.38
    init_axis.bar(
        [p - width / 2 for p in positions],
        [r.seeds_init[0] for r in rows],
        width,
        yerr=[r.seeds_init[1] for r in rows],
        capsize=3,
        color="#4c72b0",
        label="seeds",
    )
    init_axis.bar([p + width / 2 for p in positions], [r.init_s for r in rows], width,
                  color="#dd8452", label="model")  # fmt: skip
    event_axis.bar([p - width / 2 for p in positions], [r.seeds_event for r in rows], width,
                   color="#4c72b0", label="seeds")  # fmt: skip
    event_axis.bar([p + width / 2 for p in positions], [r.event_s for r in rows], width,
                   color="#dd8452", label="model")  # fmt: skip
    for axis, title in ((init_axis, "initialisation (s)"), (event_axis, "per event (s)")):
        axis.set_xticks(list(positions), labels, rotation=25, ha="right", fontsize=8)
        axis.set_title(title)
        axis.set_ylim(bottom=0)
    event_axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.suptitle("Figure 10: SP5, model (orange) beside the seeds (blue, with their sd)")
    figure.tight_layout()
    figure.savefig(str(path), dpi=110)
    plt.close(figure)
