"""The written side of ``aviary simulate validate``: Markdown, CSV, JSON and the plot.

``write_report`` writes a run's files; ``markdown_from_document`` renders a
written ``validation.json`` for ``aviary report`` without running anything.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from simulation.validate_results import (
    CALIBRATION_REPEAT,
    TOLERANCE,
    ValidationReport,
    rtt_label,
)

__all__ = ["markdown_from_document", "summary", "write_report"]


# -- writing -------------------------------------------------------------------------------


def _seconds(value: float) -> str:
    return f"{value:.3f} s" if value >= 0.1 else f"{value * 1e3:.2f} ms"


def summary(report: ValidationReport) -> str:
    """The verdict and the main table (what the command prints)."""
    worst = max(report.rows, key=lambda r: abs(r.error_pct))
    lines = [
        f"**{report.within} of {len(report.rows)}** stages and operations are within "
        f"{TOLERANCE:.0%}; the largest error is {worst.error_pct:+.1f}% "
        f"({worst.kind} {worst.name} at RTT {worst.setting}).",
        "",
        "| RTT asked | RTT echo | kind | stage / operation | measured | predicted | error | "
        f"within {TOLERANCE:.0%} | predicted (nominal) | error (nominal) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report.rows:
        nominal_error = (r.predicted_nominal_s - r.measured_s) / r.measured_s * 100
        note = f" ({r.note})" if r.note else ""
        lines.append(
            f"| {r.setting} | {r.network_rtt_ms:.2f} ms | {r.kind} | {r.name}{note} | "
            f"{_seconds(r.measured_s)} | {_seconds(r.predicted_s)} | {r.error_pct:+.1f}% | "
            f"{'yes' if r.within else 'no'} | {_seconds(r.predicted_nominal_s)} | "
            f"{nominal_error:+.1f}% |"
        )
    return "\n".join(lines)


def _markdown(report: ValidationReport) -> str:
    lines = [
        f"# Validation: the simulation against real runs ({report.server})",
        "",
        f"The Andrew-like benchmark ({report.files} files, {report.repeat} run(s) per setting, "
        "median per stage) under `aviary run`, and the Figure 7 operations through the driver "
        f"(median of {report.figure7_runs} calls), with the client in faultnet's kernel back-end "
        "(private network namespaces, a conntrack NAT, latency added by the relay), against "
        "the simpy model's prediction for the same settings.",
        "",
        "What the model is given: each setting's network RTT, measured by a TCP echo through the "
        "same relay before and after the runs (mean; "
        f"{report.base_rtt_s * 1e6:.0f} us with no added latency); the protocol's round trips, "
        "service times and connection cost, measured with the driver at RTT 0; each stage's "
        "driver operations, from the agent's trace of the RTT-0 calibration runs; and each "
        f"stage's client time (programs and agent: the median of {CALIBRATION_REPEAT} RTT-0 "
        "calibration runs less the model's remote time). Each setting, RTT 0 included, is then "
        "a fresh run that the model did not see. `nominal` is the model at the asked RTT plus "
        "the relay's RTT-0 path, without the echo.",
        "",
        "Where the testbed and the model differ by construction: the relay delays data, not the "
        "TCP handshake (the server namespace's kernel answers the SYN), while the model counts "
        "one round trip for it, once per run (in the copy stage); the relay's timer (asyncio on "
        "epoll: 1 ms resolution, rounded up) holds data longer than asked, which the echo sees "
        "and the `nominal` columns do not; the client's time is taken from RTT 0 and assumed "
        "not to depend on the network.",
        "",
        summary(report),
        "",
        "Per stage, the remote operations the model replays (from the RTT-0 trace), the client "
        "time it adds, and what each run's trace says reached the server (calls; the agent's "
        "seconds in them):",
        "",
        "| stage | operations | client time | "
        + " | ".join(f"RTT {rtt_label(s.nominal_rtt_s)}" for s in report.settings)
        + " |",
        "|---|---|---|" + "---|" * len(report.settings),
    ]
    for stage in report.stages:
        ops = ", ".join(f"{op} {n}" for op, n in sorted(stage.operations.items()))
        cells = [
            f"{s.remote_calls[stage.name]} calls; {_seconds(s.remote_s[stage.name])}"
            for s in report.settings
        ]
        lines.append(
            f"| {stage.name} | {ops} | {_seconds(report.client_s[stage.name])} | "
            + " | ".join(cells)
            + " |"
        )
    lines += [
        "",
        "Round trips per operation (the driver's counters) and service time, measured at RTT 0 "
        "through the relay:",
        "",
        "| operation | round trips | service |",
        "|---|---|---|",
    ]
    for op, cost in report.model.costs.items():
        lines.append(f"| {op} | {cost.round_trips:.2f} | {cost.service_s * 1e6:.0f} us |")
    return "\n".join(lines) + "\n"


def _document(report: ValidationReport) -> dict[str, Any]:
    from benchmarks.common import machine_description

    return {
        "benchmark": "validation",
        "protocol": report.protocol,
        "server": report.server,
        "files": report.files,
        "repeat": report.repeat,
        "figure7_runs": report.figure7_runs,
        "tolerance": TOLERANCE,
        "machine": machine_description(),
        "base_rtt_s": report.base_rtt_s,
        "model": {
            "origin": report.model.origin,
            "costs": {op: asdict(c) for op, c in report.model.costs.items()},
            "unsupported": sorted(report.model.unsupported),
        },
        "stages": [asdict(s) for s in report.stages],
        "calibration_run_s": report.calibration_run_s,
        "client_s": report.client_s,
        "settings": [asdict(s) for s in report.settings],
        "rows": [asdict(r) for r in report.rows],
        "within": report.within,
    }


def _plot(report: ValidationReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for axis, kind, unit, scale in ((axes[0], "andrew", "s", 1.0), (axes[1], "figure7", "ms", 1e3)):
        names = list(dict.fromkeys(r.name for r in report.rows if r.kind == kind))
        for i, name in enumerate(names):
            rows = [r for r in report.rows if r.kind == kind and r.name == name]
            x = [r.network_rtt_ms for r in rows]
            colour = f"C{i}"
            axis.plot(
                x, [r.measured_s * scale for r in rows], "o", color=colour, label=f"{name} measured"
            )
            axis.plot(
                x,
                [r.predicted_s * scale for r in rows],
                "-",
                color=colour,
                label=f"{name} predicted",
            )
        axis.set_xlabel("network RTT (ms, measured by echo)")
        axis.set_ylabel(unit)
        axis.set_yscale("log")
        axis.set_title("Andrew-like stages" if kind == "andrew" else "Figure 7 operations")
        axis.legend(fontsize=7, ncol=2)
    figure.suptitle(f"{report.server}: measured (points) vs simulated (lines)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def markdown_from_document(document: dict[str, Any]) -> str:
    """The verdict and the table of a written ``validation.json`` (for ``aviary report``)."""
    rows = document["rows"]
    worst = max(rows, key=lambda r: abs(r["error_pct"]))
    lines = [
        f"{document['server']}, {document['files']} files; the model's inputs are measured at RTT 0 "
        "and by an echo through the relay at each setting (see validation.md for the method).",
        "",
        f"**{document['within']} of {len(rows)}** stages and operations are within "
        f"{document['tolerance']:.0%}; the largest error is {worst['error_pct']:+.1f}% "
        f"({worst['kind']} {worst['name']} at RTT {worst['setting']}).",
        "",
        "| RTT asked | RTT echo | kind | stage / operation | measured | predicted | error | within |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['setting']} | {r['network_rtt_ms']:.2f} ms | {r['kind']} | {r['name']} | "
            f"{_seconds(r['measured_s'])} | {_seconds(r['predicted_s'])} | "
            f"{r['error_pct']:+.1f}% | {'yes' if r['within'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def write_report(report: ValidationReport, out: Path) -> list[Path]:
    """Write ``validation.md``, ``.csv``, ``.json`` and ``.png`` into ``out``; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"validation.{ext}" for ext in ("md", "csv", "json", "png")]
    paths[0].write_text(_markdown(report))
    with paths[1].open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(report.rows[0])))
        writer.writeheader()
        writer.writerows(asdict(r) for r in report.rows)
    paths[2].write_text(json.dumps(_document(report), indent=2, default=str) + "\n")
    _plot(report, paths[3])
    return paths
