"""The seeds' SP5 measurements (Figure 10) and what follows from them alone.

The same-host rows give the program's CPU, the agent's trapping and the Chirp
server's work; the LAN row fixes how many pages SP5 reads. ``figure10`` builds
the model on these; ``workloads`` takes its SP5 defaults from here.
"""

from __future__ import annotations

from simulation.protocols import OpCost, ProtocolModel

INIT_CPU_S = 446.0  # seconds: SP5's initialisation, same host, local files, 1 GHz (row 1)
EVENT_CPU_S = 64.0  # seconds: one event, same host, local files, 1 GHz (row 1)
AGENT_INIT_S = 668.0 - 446.0  # seconds: Parrot's trapping during initialisation, 1 GHz (row 2)
AGENT_EVENT_S = 65.0 - 64.0  # seconds: Parrot's trapping per event, 1 GHz (row 2)
CHIRP_INIT_S = 777.0 - 668.0  # seconds: a Chirp server on the same host, initialisation (row 3)
CHIRP_EVENT_S = 66.0 - 65.0  # seconds: a Chirp server on the same host, per event (row 3)
PAGE_BYTES = 8192  # bytes: one Objectivity database page, what each remote read fetches
#: Bytes on the wire for one page read: the reply line, the page, and the framing of its six
#: TCP segments (1448 bytes of payload each; 66 bytes of Ethernet, IP and TCP headers each).
PAGE_WIRE_BYTES = 5 + PAGE_BYTES + 6 * 66
REQUEST_WIRE_BYTES = 25 + 66  # bytes: "pread fd 8192 offset" and its segment
BANDWIDTH = 12.5e6  # bytes per second: 100 Mb/s Ethernet (the seeds' LAN; WAN assumed the same)
LAN_RTT = 130e-6  # seconds (the seeds: 130 +/- 10 us)
WAN_RTT = 654e-6  # seconds (the seeds: 654 +/- 50 us)
LAN_INIT_S = 4505.0  # seconds: the seeds' LAN parrot/chirp row, which fixes the page count
LAN_EVENT_S = 113.0  # seconds: the same row, per event
WAN_GHZ = 2.5  # the WAN node's clock (the seeds: "about 2.5 times as fast")
NAT_TIMEOUT = 60.0  # seconds a NAT keeps an idle flow (the seeds' most aggressive one)
CLIENT_TIMEOUT = 30.0  # seconds: Chirp's fail-fast timeout in the seeds' deployment
OPEN_FILES = 4  # database files SP5 holds open, reopened and checked after a reconnect
REOPEN_ROUND_TRIPS = 2  # open + stat (the inode check) per reopened file


def network_per_page(rtt: float) -> float:
    return rtt + (PAGE_WIRE_BYTES + REQUEST_WIRE_BYTES) / BANDWIDTH


def _pages(remote_s: float, server_s: float) -> tuple[float, float]:
    """Pages read, and the server's seconds per page, from a LAN row's remote seconds.

    ``remote_s = pages * (server + LAN round trip + transfer)`` with ``pages * server``
    the same-host row's Chirp cost: solved for ``pages``.
    """
    pages = (remote_s - server_s) / network_per_page(LAN_RTT)
    return pages, server_s / pages


INIT_PAGES, SERVER_S_PER_PAGE = _pages(LAN_INIT_S - INIT_CPU_S - AGENT_INIT_S, CHIRP_INIT_S)
EVENT_PAGES, _ = _pages(LAN_EVENT_S - EVENT_CPU_S - AGENT_EVENT_S, CHIRP_EVENT_S)


def seeds_chirp() -> ProtocolModel:
    """Chirp as the seeds ran it: one page per read, the same-host rows' server time."""
    read = OpCost(1.0, REQUEST_WIRE_BYTES, PAGE_WIRE_BYTES, 0.0, SERVER_S_PER_PAGE)
    write = OpCost(1.0, PAGE_WIRE_BYTES, 8.0, 0.0, SERVER_S_PER_PAGE)
    small = OpCost(1.0, 40.0, 80.0, 0.0, SERVER_S_PER_PAGE)
    costs = {op: small for op in ("stat", "lstat", "fstat", "open", "close", "readdir", "mkdir",
                                  "rmdir", "unlink", "rename")}  # fmt: skip
    costs |= {"pread": read, "pwrite": write, "connect": OpCost(4.0, 200.0, 200.0, 0.0, 0.0)}
    return ProtocolModel("chirp-2004", "seeds: Figure 10's same-host rows (per-request cost)",
                         costs)  # fmt: skip


def seeds_job_fields(ghz: float = 1.0) -> dict[str, float | int]:
    """The seeds' SP5 under the agent on a ``ghz`` node: :class:`Sp5Job` keyword arguments."""
    return {
        "init_cpu_s": (INIT_CPU_S + AGENT_INIT_S) / ghz,
        "init_rpcs": round(INIT_PAGES),
        "init_read_bytes": PAGE_BYTES,
        "event_cpu_s": (EVENT_CPU_S + AGENT_EVENT_S) / ghz,
        "event_reads": round(EVENT_PAGES),
    }
