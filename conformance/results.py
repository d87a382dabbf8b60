"""Conformance results: the Figure 5 table, and the gate against the committed baseline.

A results file (``results/conformance/<driver>-<server>-<through>.json`` unless told
otherwise) lists, for one driver, server and way through, each property with its outcome:
``passed``, ``failed``, ``gap`` (a declared gap, still failing), ``xpass`` (a
declared gap that passed: the declaration is stale), ``skipped`` or ``error``.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Regression", "ResultSet", "compare_to_baseline", "load_results", "render_table"]

#: How each outcome reads in the Figure 5 table.
SYMBOL = {
    "passed": "yes",
    "failed": "NO",
    "gap": "gap",
    "xpass": "yes (stale gap)",
    "skipped": "-",
    "error": "ERR",
}


@dataclass(frozen=True)
class ResultSet:
    driver: str
    server: str
    through: str
    outcomes: dict[str, str]  # property -> outcome
    evidence: dict[str, str]

    @property
    def column(self) -> str:
        return f"{self.driver}/{self.server}/{self.through}"


def load_results(directory: Path) -> list[ResultSet]:
    """Every results file in ``directory``, sorted by driver, server and way through."""
    sets = []
    for path in sorted(directory.glob("*.json")):
        document = json.loads(path.read_text())
        properties = document["properties"]
        sets.append(
            ResultSet(
                document["driver"],
                document["server"],
                document["through"],
                {p["property"]: p["outcome"] for p in properties},
                {p["property"]: p.get("evidence", "") for p in properties},
            )
        )
    return sets


def render_table(sets: list[ResultSet]) -> tuple[str, str]:
    """Figure 5 (protocol compatibility with POSIX) as Markdown and as CSV."""
    properties = sorted({p for s in sets for p in s.outcomes})
    header = ["property", *[s.column for s in sets]]
    rows = [
        [prop, *[SYMBOL.get(s.outcomes.get(prop, ""), "") for s in sets]] for prop in properties
    ]
    markdown = [
        "# Figure 5, measured: compatibility of each driver with POSIX",
        "",
        "`yes`: the property holds; `NO`: it fails; `gap`: a declared gap (conformance/gaps.toml); "
        "`-`: not applicable here. Columns are driver/server/way through (direct or through the agent).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    markdown += ["| " + " | ".join(row) + " |" for row in rows]
    markdown += _why_not(sets)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return "\n".join(markdown) + "\n", buffer.getvalue()


def _why_not(sets: list[ResultSet]) -> list[str]:
    """Under the table, each failure's evidence: for the random comparison, its shrunk steps."""
    lines: list[str] = []
    for result in sets:
        for prop, outcome in sorted(result.outcomes.items()):
            evidence = result.evidence.get(prop, "").strip()
            if outcome in ("failed", "error") and evidence:
                fence = "````" if "```" in evidence else "```"
                lines += ["", f"**{result.column}: {prop}**", "", fence, evidence, fence]
    return ["", "## Why each NO", *lines] if lines else []


@dataclass(frozen=True)
class Regression:
    column: str
    property: str
    was: str
    now: str
    evidence: str

    def __str__(self) -> str:
        why = f": {self.evidence}" if self.evidence else ""
        return f"{self.column}: {self.property} was {self.was}, now {self.now}{why}"


def compare_to_baseline(
    latest: list[ResultSet], baseline: list[ResultSet]
) -> tuple[list[Regression], list[str]]:
    """Properties that passed in the baseline and no longer pass; and columns the baseline lacks."""
    known = {s.column: s for s in baseline}
    regressions: list[Regression] = []
    new_columns: list[str] = []
    for result in latest:
        before = known.get(result.column)
        if before is None:
            new_columns.append(result.column)
            continue
        for prop, was in before.outcomes.items():
            now = result.outcomes.get(prop, "missing")
            if was in ("passed", "xpass") and now not in ("passed", "xpass", "skipped"):
                regressions.append(
                    Regression(result.column, prop, was, now, result.evidence.get(prop, ""))
                )
    return regressions, new_columns
