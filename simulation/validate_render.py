"""The written side of ``aviary simulate validate``: Markdown, CSV, JSON and the plot.

``write_report`` writes a run's files; ``markdown_from_document`` renders a
written ``validation.json`` for ``aviary report`` without running anything.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from simulation.validate_results import TOLERANCE, Row, ValidationReport
from simulation.workloads import STAGES

__all__ = ["markdown_from_document", "summary", "write_report"]


# -- writing -------------------------------------------------------------------------------


def _seconds(value: float) -> str:
    return f"{value:.3f} s" if abs(value) >= 0.1 else f"{value * 1e3:.2f} ms"


def _range(values: list[float]) -> str:
    if len(values) < 2:
        return "one run"
    return f"{_seconds(min(values))} - {_seconds(max(values))}"


def _errors(row: dict[str, Any]) -> str:
    pairs = zip(row["predicted_runs_s"], row["measured_runs_s"], strict=True)
    return ", ".join(f"{(p - m) / m * 100:+.0f}%" for p, m in pairs)


def _verdict(document: dict[str, Any]) -> list[str]:
    rows = document["rows"]
    worst = max(rows, key=lambda r: abs(r["error_pct"]))
    return [
        f"**{document['within']} of {len(rows)}** stages and operations are within "
        f"{document['tolerance']:.0%}; the largest error is {worst['error_pct']:+.1f}% "
        f"({worst['kind']} {worst['name']} at RTT {worst['setting']}).",
    ]


def _table(rows: list[dict[str, Any]]) -> list[str]:
    """Model beside measured, with the error: medians of the repeats, and each repeat's error."""
    lines = [
        "| RTT asked | link RTT | kind | stage / operation | measured (median) | range | "
        "model (median) | range | error | each run's error | within |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        note = f" ({r['note']})" if r["note"] else ""
        lines.append(
            f"| {r['setting']} | {r['network_rtt_ms']:.2f} ms | {r['kind']} | {r['name']}{note} | "
            f"{_seconds(r['measured_s'])} | {_range(r['measured_runs_s'])} | "
            f"{_seconds(r['predicted_s'])} | {_range(r['predicted_runs_s'])} | "
            f"{r['error_pct']:+.1f}% | {_errors(r)} | {'yes' if r['within'] else 'no'} |"
        )
    return lines


def _terms(rows: list[dict[str, Any]]) -> list[str]:
    """Which term of the model a row's error is in."""
    lines = [
        "Where each stage's time goes (medians of the repeats): the calibration runs at RTT 0 "
        "either side of the measured run (their mean, and how far apart the two were: the "
        "machine's load moving between them); the time the network adds, as the model has it "
        "and as measured (the run less the calibrations' mean); the round trips, the model's "
        "(its costs times the trace's operations) and the run's (the drivers' counters in "
        "its trace).",
        "",
        "The network term includes the agent's path: per round trip, what the probe measured "
        "beyond the echo at that RTT (see below), times the model's round trips.",
        "",
    ]
    lines += _terms_table(
        rows,
        "andrew",
        "stage",
        [
            ("calibration runs", lambda t: _seconds(t["calibration_s"])),
            ("apart", lambda t: f"{t['calibration_gap_pct']:.0f}%"),
            ("network: model", lambda t: _seconds(t["network_model_s"])),
            ("network: measured", lambda t: _seconds(t["network_measured_s"])),
            ("round trips: model", lambda t: f"{t['round_trips_model']:.0f}"),
            ("round trips: trace", lambda t: f"{t['round_trips_trace']:.0f}"),
            (
                "agent's path per round trip",
                lambda t: f"{t.get('path_per_round_trip_s', 0.0) * 1e6:.0f} us",
            ),
            ("agent's path in the stage", lambda t: _seconds(t.get("path_model_s", 0.0))),
        ],
    )
    lines += [
        "",
        "Each Figure 7 operation: the same calls at RTT 0, alternating with these in blocks "
        "of a few (their calibration), and the time the latency adds, as the model has it "
        "(its round trips times the echo's RTT, less the echo's RTT at 0) and as measured.",
        "",
    ]
    lines += _terms_table(
        rows,
        "figure7",
        "operation",
        [
            ("round trips", lambda t: f"{t['round_trips_model']:.0f}"),
            ("calls at RTT 0", lambda t: _seconds(t["calibration_s"])),
            ("latency: model", lambda t: _seconds(t["network_model_s"])),
            ("latency: measured", lambda t: _seconds(t["network_measured_s"])),
        ],
    )
    return lines


def _terms_table(
    rows: list[dict[str, Any]],
    kind: str,
    name: str,
    columns: list[tuple[str, Callable[[dict[str, Any]], str]]],
) -> list[str]:
    """The rows of ``kind``: setting, ``name`` (the row's), then a column per term's cell."""
    heads = ["RTT asked", name, *(head for head, _ in columns)]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for r in rows:
        if r["kind"] == kind:
            cells = [str(r["setting"]), r["name"], *(cell(r["terms"]) for _, cell in columns)]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def _fit_text(fit: dict[str, Any]) -> str:
    return (
        f"{fit['intercept_s'] * 1e6:.0f} us + {fit['slope']:.3f} x RTT per round trip "
        f"(at 2 ms: {(fit['intercept_s'] + 0.002 * fit['slope']) * 1e6:.0f} us, at 10 ms: "
        f"{(fit['intercept_s'] + 0.01 * fit['slope']) * 1e6:.0f} us)"
    )


def _agent_path(document: dict[str, Any]) -> list[str]:
    """The path term: each probe's spread, the fit, the calibration file's term and status."""
    fit = document.get("agent_path")
    lines = [
        "The agent's path (a first-principles term of the model): a program under `aviary run` "
        "stats a remote path in a loop, at RTT 0 and at the setting's RTT in alternating runs, "
        "each between two echoes; per pair, the time per round trip at the RTT less at 0, less "
        "the echo's at the RTT less at 0, is what the agent's path pays beyond the network (the "
        "traced program, the agent and the relay each wake up after the wait; at RTT 0 that "
        "time is in the client's own time). Each stage's prediction adds it per round trip.",
        "",
    ]
    if "agent_path" not in document:
        return [*lines, "(this validation predates the term: run it again to measure it)", ""]
    if fit is None:
        return [*lines, "No setting above RTT 0: the term was not measured.", ""]
    lines += [
        "| RTT asked | run | excess per round trip (median) | quartiles | range | outliers | "
        "agent at RTT | echo at RTT | agent at 0 | echo at 0 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n, p in enumerate(fit["points"]):
        e = p["excess"]
        outliers = ", ".join(f"pair {i + 1}: {v * 1e6:.0f} us" for i, v in e["outliers"]) or "none"
        lines.append(
            f"| {p['rtt_s'] * 1e3:g} ms | {n + 1} | {e['median'] * 1e6:.0f} us | "
            f"{e['q1'] * 1e6:.0f} - {e['q3'] * 1e6:.0f} us | {e['low'] * 1e6:.0f} - "
            f"{e['high'] * 1e6:.0f} us | {outliers} | {p['round_trip_s'] * 1e3:.2f} ms | "
            f"{p['echo_s'] * 1e3:.2f} ms | {p['base_round_trip_s'] * 1e3:.2f} ms | "
            f"{p['base_echo_s'] * 1e3:.2f} ms |"
        )
    lines += ["", f"Fitted over these runs: {_fit_text(fit)}."]
    recorded = document.get("recorded_agent_path")
    lines.append(
        f"The calibration file's term: {_fit_text(recorded)}."
        if recorded is not None
        else "The calibration file has no agent's path term (made before it was measured)."
    )
    for problem in document.get("calibration_problems", []):
        lines.append(f"Calibration file: {problem}.")
    return [*lines, ""]


def _machine(document: dict[str, Any]) -> str:
    machine = document["machine"]
    return (
        f"Measured {machine['date']} on {machine['cpu_model']}, {machine['cores']} cores "
        f"({machine['usable_cores']} usable), kernel {machine['kernel']}, aviary "
        f"{machine['aviary_commit']}; load average {document['load_start']:.1f} at the start, "
        f"{document['load_end']:.1f} at the end ({document['load_range'][0]:.1f} - "
        f"{document['load_range'][1]:.1f} during)."
    )


def summary(report: ValidationReport) -> str:
    """The verdict and the main table (what the command prints)."""
    rows = [_row_document(r) for r in report.rows]
    document = {"rows": rows, "within": report.within, "tolerance": TOLERANCE}
    path = report.agent_path
    said = [] if path is None else ["", f"The agent's path: {_fit_text(path.to_json())}."]
    said += [f"Calibration file: {problem}." for problem in report.calibration_problems]
    return "\n".join([*_verdict(document), "", *_table(rows), *said])


def _row_document(row: Row) -> dict[str, Any]:
    return asdict(row) | {"pair_errors_pct": row.pair_errors_pct}


def _method(document: dict[str, Any]) -> list[str]:
    return [
        f"The Andrew-like benchmark ({document['files']} files) under `aviary run`, and the "
        f"Figure 7 operations through the driver (median of {document['figure7_runs']} calls), "
        "with the client in faultnet's kernel back-end (private network namespaces, a conntrack "
        "NAT, latency added by the relay), beside the simpy model's prediction. Each setting "
        f"was measured {document['repeat']} time(s); before the first run and after every run "
        "the model was calibrated at RTT 0 (the driver's operations timed in a loop, and a "
        "traced Andrew-like run: its operations, and its stage times less the model's remote "
        "time, the client's own time), and each run is predicted from the calibrations either "
        "side of it, at the RTT an echo through the relay measured just before and after it "
        "(the mean: a stage is a sum of many round trips, late ones included), plus the agent's "
        "path per round trip, measured by a probe at that RTT just before the run. "
        "A Figure 7 operation's calls alternate in blocks with the same calls at RTT 0, their "
        "calibration; the model adds its round trips, each a draw of the echoes. No measured "
        "run's time is an input of its prediction.",
    ]


def markdown_from_document(document: dict[str, Any]) -> str:
    """The verdict, the tables and the machine of a written ``validation.json``."""
    if "load_start" not in document or any("terms" not in r for r in document["rows"]):
        return (
            "(this validation.json was written by an older aviary, without the repeats, the "
            "terms or the machine's load: run `aviary simulate validate` again)\n"
        )
    lines = [
        f"{document['server']}: " + _method(document)[0],
        "",
        _machine(document),
        "",
        *_verdict(document),
        "",
        *_table(document["rows"]),
        "",
        *_terms(document["rows"]),
        "",
        *_agent_path(document),
    ]
    return "\n".join(lines) + "\n"


def _markdown(report: ValidationReport, document: dict[str, Any]) -> str:
    lines = [
        f"# Validation: the simulation against real runs ({report.server})",
        "",
        markdown_from_document(document),
        "Where the testbed and the model differ by construction: the relay delays data, not the "
        "TCP handshake (the server namespace's kernel answers the SYN), while the model counts "
        "one round trip for it, once per run (in the copy stage); `nominal` (in the JSON and "
        "CSV) is the model at the asked RTT plus the relay's RTT-0 path, without the echo.",
        "",
        "The calibrations (RTT 0), in order:",
        "",
        "| # | echo | echo during the run | load | "
        + " | ".join(f"{s} run" for s in STAGES)
        + " |",
        "|---|---|---|---|" + "---|" * len(STAGES),
    ]
    for c in report.calibrations:
        lines.append(
            f"| {c.index + 1} | {c.echo_rtt_s * 1e6:.0f} us | {c.run_rtt_s * 1e6:.0f} us | "
            f"{c.load:.1f} | " + " | ".join(_seconds(c.run_s[s]) for s in STAGES) + " |"
        )
    lines += [
        "",
        "Per stage, the remote operations the model replays (from the first calibration's "
        "trace) and the client time it adds (median of the calibrations):",
        "",
        "| stage | operations | client time |",
        "|---|---|---|",
    ]
    for stage in report.stages:
        ops = ", ".join(f"{op} {n}" for op, n in sorted(stage.operations.items()))
        lines.append(f"| {stage.name} | {ops} | {_seconds(report.client_s[stage.name])} |")
    lines += [
        "",
        "Round trips per operation (the driver's counters) and service time, measured at RTT 0 "
        "through the relay (median of the calibrations, lowest - highest):",
        "",
        "| operation | round trips | service | range |",
        "|---|---|---|---|",
    ]
    for op, cost in report.model.costs.items():
        seen = [c.model.costs[op].service_s for c in report.calibrations if op in c.model.costs]
        lines.append(
            f"| {op} | {cost.round_trips:.2f} | {cost.service_s * 1e6:.0f} us | "
            f"{min(seen) * 1e6:.0f} - {max(seen) * 1e6:.0f} us |"
        )
    return "\n".join(lines) + "\n"


def _document(report: ValidationReport) -> dict[str, Any]:
    from benchmarks.common import machine_description

    loads = [c.load for c in report.calibrations] + [
        load for s in report.settings for load in s.load
    ]
    return {
        "benchmark": "validation",
        "protocol": report.protocol,
        "server": report.server,
        "files": report.files,
        "repeat": report.repeat,
        "figure7_runs": report.figure7_runs,
        "tolerance": TOLERANCE,
        "machine": machine_description(),
        "load_start": report.load_start,
        "load_end": report.load_end,
        "load_range": [min([report.load_start, *loads]), max([report.load_end, *loads])],
        "base_rtt_s": report.base_rtt_s,
        "model": {
            "origin": report.model.origin,
            "costs": {op: asdict(c) for op, c in report.model.costs.items()},
            "unsupported": sorted(report.model.unsupported),
        },
        "stages": [asdict(s) for s in report.stages],
        "calibration_run_s": report.calibration_run_s,
        "client_s": report.client_s,
        "calibrations": [
            asdict(c) | {"model": {op: asdict(v) for op, v in c.model.costs.items()}}
            for c in report.calibrations
        ],
        "settings": [asdict(s) for s in report.settings],
        "rows": [_row_document(r) for r in report.rows],
        "within": report.within,
        "agent_path": report.agent_path.to_json() if report.agent_path else None,
        "recorded_agent_path": (
            report.recorded_agent_path.to_json() if report.recorded_agent_path else None
        ),
        "calibration_problems": report.calibration_problems,
    }


def _plot(report: ValidationReport, path: Path) -> None:
    """One panel per stage and operation: measured (median, range) and model against link RTT."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys((r.kind, r.name) for r in report.rows))
    columns = 5
    lines = (len(names) + columns - 1) // columns
    figure, axes = plt.subplots(lines, columns, figsize=(3.2 * columns, 3.0 * lines), squeeze=False)
    for axis, (kind, name) in zip(axes.flat, names, strict=False):
        rows = [r for r in report.rows if (r.kind, r.name) == (kind, name)]
        scale, unit = (1.0, "s") if kind == "andrew" else (1e3, "ms")
        x = [r.network_rtt_ms for r in rows]
        measured = [r.measured_s * scale for r in rows]
        low = [m - min(r.measured_runs_s) * scale for m, r in zip(measured, rows, strict=True)]
        high = [max(r.measured_runs_s) * scale - m for m, r in zip(measured, rows, strict=True)]
        axis.errorbar(x, measured, yerr=[low, high], fmt="o", color="C0", capsize=3,
                      label="measured (median, range)")  # fmt: skip
        axis.plot(x, [r.predicted_s * scale for r in rows], "s--", color="C1", label="model")
        for r, xi, m in zip(rows, x, measured, strict=True):
            axis.annotate(f"{r.error_pct:+.0f}%", (xi, m), textcoords="offset points",
                          xytext=(6, -12), fontsize=8, color="C3" if not r.within else "C2")  # fmt: skip
        axis.set_title(f"{'stage' if kind == 'andrew' else 'Figure 7'}: {name}", fontsize=9)
        axis.set_xlabel("link RTT (ms, echo)", fontsize=8)
        axis.set_ylabel(unit, fontsize=8)
        axis.set_ylim(bottom=0)
        axis.set_xlim(left=0)
    for axis in list(axes.flat)[len(names) :]:
        axis.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="upper center", ncol=2, bbox_to_anchor=(0.5, 1.0))
    figure.suptitle(f"{report.server}: measured beside the model, with the error", y=1.04)
    figure.tight_layout()
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)


def write_report(report: ValidationReport, out: Path) -> list[Path]:
    """Write ``validation.md``, ``.csv``, ``.json`` and ``.png`` into ``out``; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"validation.{ext}" for ext in ("md", "csv", "json", "png")]
    document = _document(report)
    paths[0].write_text(_markdown(report, document))
    with paths[1].open("w", newline="") as f:
        rows = [_row_document(r) for r in report.rows]
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    paths[2].write_text(json.dumps(document, indent=2, default=str) + "\n")
    _plot(report, paths[3])
    return paths
