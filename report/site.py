"""``aviary report``: every table of the seeds, measured and simulated here, in one report.

Covers: Figure 7 (operation latency per driver and server), Figure 3
(interposition overhead), Figure 8 (the Andrew-like benchmark, cache off and
on), Figure 6 (cp throughput per block-size hint), a synthetic SP5 measured
under the agent (Figure 10's same-host rows), Figure 5
(POSIX compatibility, from conformance runs), and the simulated tables
(Figure 8 at LAN and WAN distance for every protocol model, Figure 10 for SP5,
the scale curve); each beside the seeds' own numbers, with its provenance
(measured on this machine, or simulated from calibrated inputs), in Markdown,
CSV or JSON, PNG plots, and one ``index.html``.

Scenario: ``--quick`` (the default) uses small budgets and finishes in a few
minutes; ``--full`` uses the benchmarks' defaults.
"""

from __future__ import annotations

import html
import json
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from markdown_it import MarkdownIt
from rich.console import Console

from benchmarks import seeds_data
from benchmarks.andrew import CACHE_MODES
from benchmarks.common import loadable_servers
from benchmarks.sp5 import Sp5Params
from servers import SERVERS
from servers.mounts import MOUNTERS

__all__ = ["BUDGETS", "REPO_ROOT", "ReportError", "run_site"]

#: The checkout the report runs from: the conformance suite and the benchmarks' data live here,
#: whatever the current directory.
REPO_ROOT = Path(__file__).resolve().parent.parent


class ReportError(Exception):
    """A section cannot be produced; its message goes in a red box and on stderr."""


@dataclass(frozen=True)
class Budget:
    latency_iterations: int
    micro_iterations: int
    micro_repeat: int
    andrew_files: int
    conformance_examples: int
    sim_events: int
    repeat: int = 3  # runs per cell of latency, throughput, andrew and sp5
    throughput_size: int = 128 * 2**20  # the seeds' 128 MB
    throughput_blocks: tuple[int, ...] = (4096, 16384, 65536, 262144, 1048576)
    sp5: Sp5Params = field(default_factory=Sp5Params)


#: The quick SP5: the same shape, a few seconds per target.
QUICK_SP5 = Sp5Params(events=5, event_cpu_ms=50.0, small_files=100, big_size=8 * 2**20,
                      big_reads=1000)  # fmt: skip

BUDGETS = {
    "quick": Budget(latency_iterations=50, micro_iterations=2000, micro_repeat=2, andrew_files=60,
                    conformance_examples=10, sim_events=20, repeat=2, throughput_size=16 * 2**20,
                    throughput_blocks=(4096, 1048576), sp5=QUICK_SP5),
    "full": Budget(latency_iterations=200, micro_iterations=20000, micro_repeat=3, andrew_files=300,
                   conformance_examples=50, sim_events=100),
}  # fmt: skip


@dataclass
class Section:
    title: str
    provenance: str
    ours: str  # Markdown
    seeds: Mapping[str, object] | None
    images: list[str]
    status: int
    notes: list[str] = field(default_factory=list)  # where a protocol's semantics explain a number
    error: str = ""  # why the section failed (shown in a red box)


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else f"(not produced: {path.name} is missing)\n"


def _figure7(out: Path, budget: Budget) -> Section:
    from report.figure7 import run_report

    status = run_report(out, budget.latency_iterations, loadable_servers(), budget.repeat)
    images = _replot(out, "figure7", _figure7_plot)
    return Section("Figure 7: latency of POSIX operations per driver and server", "measured on this machine",
                   _read(out / "figure7.md"), seeds_data.FIGURE7, images, status,
                   FIGURE7_NOTES)  # fmt: skip


def _replot(out: Path, stem: str, plot: Callable[[dict[str, Any], Path], None]) -> list[str]:
    """The report's own plot of a benchmark's JSON (small multiples, linear axes from 0)."""
    document = out / f"{stem}.json"
    if not document.exists():
        return []
    plot(json.loads(document.read_text()), out / f"{stem}-report.png")
    return [f"{stem}-report.png"]


#: What a protocol's semantics do to Figure 7's numbers, printed beside it.
FIGURE7_NOTES = [
    "FTP and WebDAV: `write 8KB` costs no round trip and looks as fast as local. These are "
    "get/put protocols: the driver keeps the written bytes and uploads the whole file at close "
    "(STOR or PUT), so the write's cost is in the close that follows it (open/close), not in "
    "the write.",
    "FTP: each read opens a data connection and asks for the bytes from an offset (REST and "
    "RETR: 2 round trips and 1 connection per read in the counters), which is why a 1-byte "
    "read costs as much as an 8 KB one and more than a stat.",
    "XRootD: open/close costs no round trip: the driver opens the file on the server lazily, "
    "at the first read or write, which then carries the open's cost.",
    "HTTP: read-only; write and mkdir+rmdir are refused (n/a), not slow.",
    "Chirp: every operation is one request and one reply, the same round trip for stat, read "
    'and write: the seeds\' Figure 5 "direct" stat.',
]


def _figure3(out: Path, budget: Budget) -> Section:
    from benchmarks.micro import run_micro

    status = run_micro(out, budget.micro_iterations, budget.micro_repeat)
    return Section("Figure 3: the cost of interposition", "measured on this machine",
                   _read(out / "figure3.md"), seeds_data.FIGURE3, _replot(out, "figure3", _figure3_plot),
                   status)  # fmt: skip


def _figure8(out: Path, budget: Budget) -> Section:
    from benchmarks.andrew import run_andrew

    targets = [
        "native",
        "aviary-local",
        *[k for k in loadable_servers() if k.startswith(("chirp/", "ftp/"))],
    ]
    status = run_andrew(out, budget.andrew_files, targets, None, budget.repeat, CACHE_MODES)
    images = _replot(out, "andrew", _andrew_plot)
    return Section("Figure 8: the Andrew-like benchmark", "measured on this machine",
                   _read(out / "andrew.md"), seeds_data.FIGURE8, images, status,
                   ["The seeds' tree is 296 files and its make stage compiled Parrot on a 2004 "
                    "CPU (65 s locally); ours is a generated project (see its file count above) on "
                    "loopback: compare the ratios to native, not the seconds. The simulated "
                    "Figure 8 below sets the seeds' tree and LAN against their numbers."])  # fmt: skip


Panel = dict[str, float | None]  # label -> value (None: not measured, shown as n/a)


def small_multiples(title: str, unit: str, panels: dict[str, Panel], path: Path) -> None:
    """One panel per quantity, each with its own linear axis from 0 and a labelled bar per target.

    Readable by construction: a target keeps its colour in every panel (20 distinct colours,
    then hatching), labels sit on the axis rather than in a legend over the data, each bar
    carries its value, and a missing value reads ``n/a`` instead of looking like zero.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    labels = list(dict.fromkeys(label for panel in panels.values() for label in panel))
    palette = matplotlib.colormaps["tab20"]
    colours = {label: palette(i % 20) for i, label in enumerate(labels)}
    hatches = {label: "" if i < 20 else "//" for i, label in enumerate(labels)}
    columns = min(4, len(panels))
    rows = -(-len(panels) // columns)
    height = max(2.5, 0.28 * len(labels) + 1.0)
    figure, axes = plt.subplots(
        rows, columns, figsize=(4.6 * columns, height * rows), squeeze=False
    )
    for axis, (name, panel) in zip(axes.flat, panels.items(), strict=False):
        positions = range(len(labels))
        values = [panel.get(label) for label in labels]
        axis.barh(list(positions), [v or 0.0 for v in values],
                  color=[colours[label] for label in labels],
                  hatch=None, edgecolor="white")  # fmt: skip
        for bar, label in zip(axis.patches, labels, strict=True):
            bar.set_hatch(hatches[label])
        top = max([v for v in values if v is not None] or [1.0])
        for position, value in zip(positions, values, strict=True):
            text = "n/a" if value is None else f"{value:.3g}" if value < 1000 else f"{value:,.0f}"
            axis.text((value or 0.0) + top * 0.01, position, text, va="center", fontsize=7)
        axis.set_yticks(list(positions), labels, fontsize=7)
        axis.invert_yaxis()
        axis.set_xlim(0, top * 1.25)
        axis.xaxis.set_major_locator(MaxNLocator(4))
        axis.tick_params(axis="x", labelsize=7)
        axis.set_title(f"{name} ({unit})" if unit else name, fontsize=9)
    for axis in list(axes.flat)[len(panels) :]:
        axis.set_visible(False)
    figure.suptitle(title + " (each panel its own linear scale from 0)")
    figure.tight_layout()
    figure.savefig(str(path), dpi=100)
    plt.close(figure)


def _andrew_plot(document: dict[str, Any], path: Path) -> None:
    """Figure 8 measured: one panel per stage."""
    panels: dict[str, Panel] = {}
    for run in document["runs"]:
        label = str(run["target"]) + (
            f", cache {run['cache']}" if run.get("cache", "off") != "off" else ""
        )
        for stage in run["stages"]:
            panels.setdefault(str(stage["stage"]), {})[label] = stage.get("seconds")
    small_multiples("Figure 8 measured: seconds per stage", "s", panels, path)


def _figure7_plot(document: dict[str, Any], path: Path) -> None:
    panels: dict[str, Panel] = {}
    for target in document["targets"]:
        for measurement in target.get("measurements", []):
            panel = panels.setdefault(str(measurement["operation"]), {})
            panel[str(target["target"])] = measurement.get("median_us")
    small_multiples("Figure 7 measured: median latency per call", "us", panels, path)


def _figure3_plot(document: dict[str, Any], path: Path) -> None:
    units = document.get("units", {})
    panels: dict[str, Panel] = {}
    for row in document["rows"]:
        for column, value in (row.get("values") or {}).items():
            unit = units.get(column, "")
            panels.setdefault(f"{column}, {unit}", {})[str(row["agent"])] = value
    small_multiples("Figure 3 measured: the cost of interposition", "", panels, path)


def _figure6(out: Path, budget: Budget) -> Section:
    from benchmarks.common import TargetChoice
    from benchmarks.throughput import run_throughput

    status = run_throughput(out, TargetChoice(True, loadable_servers()), budget.throughput_size,
                            list(budget.throughput_blocks), budget.repeat)  # fmt: skip
    return Section("Figure 6: throughput of a file copy per block size", "measured on this machine",
                   _read(out / "figure6.md"), seeds_data.FIGURE6, _replot(out, "figure6", _figure6_plot),
                   status)  # fmt: skip


def _figure6_plot(document: dict[str, Any], path: Path) -> None:
    """One panel per block size hint; the baselines (no hint) appear in every panel."""
    baselines: Panel = {}
    panels: dict[str, Panel] = {}
    for row in document["rows"]:
        for cell in row.get("cells", []):
            value = (cell.get("mb_s_spread") or {}).get("median")
            if cell.get("block_size") is None:
                baselines[str(row["target"])] = value
            else:
                hint = f"hint {int(cell['block_size']) // 1024}K"
                panels.setdefault(hint, {})[str(row["target"])] = value
    panels = {hint: {**baselines, **panel} for hint, panel in panels.items()} or {"copy": baselines}
    small_multiples("Figure 6 measured: cp throughput", "MB/s", panels, path)


def _sp5_plot(document: dict[str, Any], path: Path) -> None:
    panels: dict[str, Panel] = {"initialisation": {}, "per event": {}}
    for row in document["rows"]:
        panels["initialisation"][str(row["target"])] = (row.get("init_spread") or {}).get("median")
        panels["per event"][str(row["target"])] = (row.get("event_spread") or {}).get("median")
    small_multiples("SP5 measured: a synthetic SP5 under the agent", "s", panels, path)


def _sp5(out: Path, budget: Budget) -> Section:
    from benchmarks.common import TargetChoice
    from benchmarks.sp5 import run_sp5

    chirp = [k for k in loadable_servers() if k.startswith("chirp/")]
    status = run_sp5(out, TargetChoice(True, chirp), budget.sp5, budget.repeat)
    return Section("SP5 measured: a synthetic SP5 under the agent (Figure 10, same host)",
                   "measured on this machine", _read(out / "sp5.md"), seeds_data.FIGURE10,
                   _replot(out, "sp5", _sp5_plot), status)  # fmt: skip


def _figure5(out: Path, budget: Budget) -> Section:
    from conformance.results import load_results, render_table

    if not (REPO_ROOT / "conformance" / "conftest.py").exists():
        raise ReportError(f"the conformance suite is not at {REPO_ROOT / 'conformance'}: "
                          "Figure 5 needs a checkout of aviary")  # fmt: skip
    out = out.resolve()
    quick = budget.conformance_examples < 50
    # A quick run's small example budget: its results go beside the full ones (what the
    # nightly job writes and the gate reads), never over them.
    results = out / ("conformance-quick" if quick else "conformance")
    drivers = sorted({SERVERS[k].protocol for k in loadable_servers()} | {"local"})
    names = {"dav": "webdav", "root": "xrootd"}
    status = 0
    errors: list[str] = []
    runs: list[tuple[str, list[str]]] = []
    for protocol in drivers:
        options = ["--driver", names.get(protocol, protocol)]
        runs.append((protocol, options if protocol == "local" else [*options, "--server", "all"]))
    # The FUSE clients users pick instead, over the same servers: Figure 5's mount columns.
    for mounter, protocols in MOUNTERS.items():
        for protocol in protocols:
            if protocol in drivers:
                options = ["--driver", names.get(protocol, protocol), "--server", "all"]
                runs.append((f"{protocol}/{mounter}", [*options, "--through", "mount",
                                                       "--mount", mounter]))  # fmt: skip
    for label, options in runs:
        command = [sys.executable, "-m", "pytest", "conformance", "-q", "-p", "no:cacheprovider",
                   *options, "--examples", str(budget.conformance_examples),
                   "--results-dir", str(results)]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800, cwd=REPO_ROOT)
        if done.returncode not in (0, 1):  # 1: properties failed, recorded in the table
            status |= done.returncode
            tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
            errors.append(f"{label}: pytest exited {done.returncode}: " + " / ".join(tail))
    markdown, table_csv = render_table(load_results(results))
    (out / "figure5.md").write_text(markdown)
    (out / "figure5.csv").write_text(table_csv)
    provenance = (
        "measured by the conformance suite on real servers, directly, through the agent and "
        f"through FUSE mounts (rclone, sshfs), {budget.conformance_examples} random examples "
        "per property"
    )
    return Section("Figure 5: compatibility with POSIX", provenance,
                   markdown, seeds_data.FIGURE5, [], status, error="\n".join(errors))  # fmt: skip


def _simulated(out: Path, budget: Budget) -> Section:
    from simulation.figure8 import figure8_markdown, figure8_plot, figure8_rows
    from simulation.model import LAN_RTT, WAN_RTT
    from simulation.protocols import load_models
    from simulation.run import simulate_andrew
    from simulation.workloads import STAGES, load_andrew

    stages, source = load_andrew()
    models = load_models()
    rows = figure8_rows(models, stages, source)
    figure8_plot(rows, out / "figure8-simulated.png")
    lines = [figure8_markdown(rows, source), "",
             f"Every protocol model, replaying {source} as recorded (remote operations only, no "
             "compiling): median seconds per stage for one client.", "",
             "| protocol | network | " + " | ".join(STAGES) + " | provenance |",
             "|---|---|" + "---|" * len(STAGES) + "---|"]  # fmt: skip
    for name, model in sorted(models.items()):
        for label, rtt in (("lan", LAN_RTT), ("wan", WAN_RTT)):
            result = simulate_andrew(model, stages, rtt)
            summary = result.stage_summary()
            cells = [f"{summary[s]['p50']:.3f}" if s in summary else "n/a" for s in STAGES]
            lines.append(
                f"| {name} | {label} | " + " | ".join(cells) + f" | simulated; {model.origin} |"
            )
    markdown = "\n".join(lines) + "\n"
    (out / "simulated.md").write_text(markdown)
    return Section("Simulated Figure 8: the Andrew-like benchmark over the seeds' LAN",
                   "modelled: the seeds' local row and Figure 7 costs, the recorded trace's operations",
                   markdown,
                   seeds_data.FIGURE8, ["figure8-simulated.png"], 0)  # fmt: skip


def _figure10(out: Path, budget: Budget) -> Section:
    from simulation.figure10 import figure10_markdown, figure10_plot

    markdown = figure10_markdown()
    (out / "figure10.md").write_text(markdown)
    figure10_plot(out / "figure10.png")
    return Section("Simulated Figure 10: SP5 over LAN and WAN, from first principles",
                   "simulated; parameters from the seeds' same-host and LAN rows, the WAN row "
                   "predicted", markdown, seeds_data.FIGURE10, ["figure10.png"], 0)  # fmt: skip


def _validation(out: Path, budget: Budget) -> Section:
    """The last ``aviary simulate validate`` (minutes, root): reused, not rerun."""
    from simulation.validate import markdown_from_document

    title = "Validation: the simulation against real runs at added latency"
    document = out / "validation.json"
    if not document.exists():
        missing = (f"(not produced: run `aviary simulate validate --out {out}` as root; it adds "
                   "latency with faultnet's kernel back-end and takes a few minutes)\n")  # fmt: skip
        return Section(title, "not run", missing, None, [], 0)
    markdown = markdown_from_document(json.loads(document.read_text()))
    return Section(title, "measured on this machine through faultnet, beside the model's prediction",
                   markdown, None, ["validation.png"], 0)  # fmt: skip


STEPS: dict[str, Callable[[Path, Budget], Section]] = {
    "figure7": _figure7,
    "figure3": _figure3,
    "figure8": _figure8,
    "figure6": _figure6,
    "sp5": _sp5,
    "figure5": _figure5,
    "simulated": _simulated,
    "figure10": _figure10,
    "validation": _validation,
}


_MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable("table")
#: A float that is not a number, as Python prints it, standing alone in a cell or sentence.
_NAN = re.compile(r"(?<![\w.])[-+]?nan(?![\w])", re.IGNORECASE)


def no_nan(text: str) -> str:
    """``nan`` (a missing measurement printed as a float) shown as ``n/a``."""
    return _NAN.sub("n/a", text)


def markdown_to_html(text: str) -> str:
    """The sections' Markdown (tables, lists, code, emphasis) as HTML; raw HTML is escaped."""
    return str(_MARKDOWN.render(no_nan(text)))


def _seeds_table(seeds: Mapping[str, object]) -> str:
    columns = seeds["columns"]
    rows = seeds["rows"]
    assert isinstance(columns, list) and isinstance(rows, dict)
    head = (
        "<tr><td></td>"
        + "".join(f"<td><b>{html.escape(str(c))}</b></td>" for c in columns)
        + "</tr>"
    )
    body = "".join(
        f"<tr><td>{html.escape(name)}</td>"
        + "".join(f"<td>{html.escape(str(v))}</td>" for v in values)
        + "</tr>"
        for name, values in rows.items()
    )
    return f"<table>{head}{body}</table>"


def _index(out: Path, sections: list[Section], mode: str, seconds: float) -> None:
    parts = [
        "<!doctype html><meta charset=utf-8><title>aviary report</title>",
        "<style>body{font-family:sans-serif;max-width:1400px;margin:auto}table{border-collapse:collapse;"
        "font-size:90%}td,th{border:1px solid #ccc;padding:2px 6px}.pair{display:flex;gap:2em}"
        ".failed{border:3px solid #c00;background:#fee;padding:0.5em 1em;color:#600}"
        ".notes{background:#f4f4f8;padding:0.3em 1em}</style>",
        f"<h1>aviary report</h1><p>{html.escape(platform.platform())}, {html.escape(platform.processor() or '')}"
        f" — {mode} budget, {seconds:.0f} s, {time.strftime('%Y-%m-%d %H:%M')}</p>",
    ]
    for section in sections:
        parts.append(
            f"<h2>{html.escape(section.title)}</h2><p><i>{html.escape(section.provenance)}</i></p>"
        )
        seeds = (
            f"<div><h3>The seeds</h3>{_seeds_table(section.seeds)}</div>" if section.seeds else ""
        )
        if section.error or section.status:
            why = section.error or f"the step exited with status {section.status}"
            parts.append(f"<div class=failed><b>This section failed.</b><pre>{html.escape(why)}</pre>"
                         "</div>")  # fmt: skip
        parts.append(
            f"<div class=pair><div><h3>Here</h3>{markdown_to_html(section.ours)}</div>{seeds}</div>"
        )
        if section.notes:
            items = "".join(f"<li>{markdown_to_html(note)}</li>" for note in section.notes)
            parts.append(f"<div class=notes><b>Notes</b><ul>{items}</ul></div>")
        parts += [f'<img src="{html.escape(image)}" style="max-width:100%">' for image in section.images
                  if (out / image).exists()]  # fmt: skip
    (out / "index.html").write_text("\n".join(parts) + "\n")


#: Every section of the last page, by step, with when it was made: what ``--only`` keeps.
SECTIONS_FILE = "sections.json"


def _earlier_sections(out: Path) -> dict[str, tuple[Section, str]]:
    """The sections an earlier run wrote to ``out``, each marked with when it was made."""
    try:
        document = json.loads((out / SECTIONS_FILE).read_text())
        earlier: dict[str, tuple[Section, str]] = {}
        for name, entry in document.items():
            section = Section(**entry["section"])
            if "(kept from" not in section.provenance:
                section.provenance += f" (kept from the run of {entry['made']})"
            earlier[name] = (section, str(entry["made"]))
        return earlier
    except (OSError, ValueError, TypeError, KeyError):
        return {}  # no earlier page, or one this version cannot read: nothing to keep


def run_site(out: Path, mode: str = "quick", only: list[str] | None = None) -> int:
    """Run the report's steps and write ``index.html``, from any current directory.

    A step that fails (an exception, or a non-zero status) becomes a red box in the
    page with its error, and a line on stderr; the others still run.

    Returns:
        0 when every step succeeded, 1 when one failed, 2 when ``out`` cannot be written.
    """
    console = Console(stderr=True)
    budget = BUDGETS[mode]
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"aviary: report: cannot write to {out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    began = time.monotonic()
    sections: list[Section] = []
    step_seconds: dict[str, float] = {}
    earlier = _earlier_sections(out)
    made: dict[str, dict[str, Any]] = {}
    for name, step in STEPS.items():
        if only and name not in only:
            if name in earlier:  # --only redoes some sections; the page keeps the others
                kept, when = earlier[name]
                sections.append(kept)
                made[name] = {"made": when, "section": asdict(kept)}
                step_seconds[kept.title] = 0.0
            continue
        console.print(f"[bold]report: {name}[/bold]")
        step_began = time.monotonic()
        try:
            sections.append(step(out, budget))
        except Exception as exc:  # one section's failure must not hide the others
            why = f"{type(exc).__name__}: {exc}"
            sections.append(Section(f"{name} (failed)", "not produced", "", None, [], 1, error=why))
        if sections[-1].status or sections[-1].error:
            why = sections[-1].error or f"exited with status {sections[-1].status}"
            print(f"aviary: report: {name} failed: {why}", file=sys.stderr)
        step_seconds[sections[-1].title] = time.monotonic() - step_began
        made[name] = {"made": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                      "section": asdict(sections[-1])}  # fmt: skip
    elapsed = time.monotonic() - began
    (out / SECTIONS_FILE).write_text(json.dumps(made, indent=1) + "\n")
    _index(out, sections, mode, elapsed)
    summary = {
        s.title: {
            "provenance": s.provenance,
            "status": s.status,
            "error": s.error,
            "seconds": step_seconds[s.title],
        }
        for s in sections
    }
    (out / "report.json").write_text(
        json.dumps({"mode": mode, "seconds": elapsed, "sections": summary}, indent=2)
    )
    console.print(f"wrote {out / 'index.html'} ({elapsed:.0f} s)")
    return 1 if any(s.status for s in sections) else 0
