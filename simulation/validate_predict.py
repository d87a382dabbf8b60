"""The model's side of ``aviary simulate validate``: one run predicted, the repeats combined.

``predict`` gives the model one measured run and the two calibrations either
side of it (nothing else: not the run's own times); ``combine`` sets the
repeats of each stage or operation side by side, as one row of medians.

A Figure 7 operation is predicted from its own calls at RTT 0, made in
blocks alternating with the calls at the setting's RTT (within a second of
them), plus what the model's link adds: its round trips, each a draw of the
echoes measured among the calls (``link_time``), less the same at RTT 0.

Per stage the prediction is, for each of the two calibrations ``c``::

    client_c + remote_c(RTT during the run)
    client_c = c's run at RTT 0 - remote_c(RTT during c's run)

where ``remote_c`` is the simpy replay of the stage's driver operations (from
c's trace) with c's costs. The terms a row reports say which of them is off:
the calibrations' stage times (``calibration_s`` and how far apart the two
were, ``calibration_gap_pct``: the machine's load between them), the time the
network adds (``network_model_s`` against ``network_measured_s``, the run less
the calibrations' mean), and the round trips (the model's, from the costs,
against the run's trace).
"""

from __future__ import annotations

import itertools
import random
import statistics
from collections.abc import Sequence

from simulation.protocols import ProtocolModel, median_cost
from simulation.run import SEED, simulate_andrew, simulate_operations
from simulation.validate_results import (
    FIGURE7_OPERATIONS,
    LINK_BANDWIDTH,
    Calibration,
    Row,
    Setting,
    rtt_label,
)
from simulation.workloads import STAGES, AndrewStage

__all__ = ["client_seconds", "combine", "link_time", "model_round_trips", "predict"]

LINK_DRAWS = 10_000  # sums of echo samples whose median is the time of several round trips


def model_round_trips(model: ProtocolModel, stage: AndrewStage) -> float:
    """The round trips the model spends on ``stage``'s operations (a connection not counted)."""
    return sum(model.cost(op).round_trips * count for op, count in stage.operations.items())


def client_seconds(
    model: ProtocolModel, stages: list[AndrewStage], run_s: dict[str, float], rtt: float
) -> dict[str, float]:
    """Per stage, a calibration run's time less the model's remote time at ``rtt``.

    Raises:
        ValueError: the model cannot replay the stages (an operation it cannot do).
    """
    remote = simulate_andrew(model, stages, rtt, bandwidth=LINK_BANDWIDTH)
    if remote.failed:
        raise ValueError(f"the model cannot replay the trace: {remote.failed}")
    return {stage: run_s[stage] - remote.stage_seconds[stage][0] for stage in STAGES}


def _pair_model(before: Calibration, after: Calibration) -> ProtocolModel:
    """The two calibrations' costs, each field their mean (the median of two)."""
    costs = {
        op: median_cost([before.model.costs[op], after.model.costs[op]])
        for op in before.model.costs
        if op in after.model.costs
    }
    return ProtocolModel(before.model.name, before.model.origin, costs, before.model.unsupported)


def _stage_prediction(calibration: Calibration, rtt: float, path_s: float) -> dict[str, float]:
    result = simulate_andrew(
        calibration.model,
        calibration.stages,
        rtt,
        bandwidth=LINK_BANDWIDTH,
        client_seconds=calibration.client_s,
        path_s=path_s,
    )
    return {stage: result.stage_seconds[stage][0] for stage in STAGES}


def link_time(samples: Sequence[float], round_trips: int) -> float:
    """The median time of ``round_trips`` round trips, each a draw of the echo's RTT.

    One round trip: the echo's median. Several: the median of their sum, over every
    combination of samples (or a seeded draw of them when there are too many). On a
    loaded machine a few round trips in four are late by milliseconds; the median of a
    sum of two meets one of them far more often than the median of one does.
    """
    count = max(1, round_trips)
    if count == 1 or len(samples) < 2:
        return count * statistics.median(samples)
    if len(samples) ** count <= LINK_DRAWS:
        sums = [sum(draw) for draw in itertools.product(samples, repeat=count)]
    else:
        rng = random.Random(SEED)
        sums = [sum(rng.choices(samples, k=count)) for _ in range(LINK_DRAWS)]
    return statistics.median(sums)


def predict(before: Calibration, after: Calibration, setting: Setting) -> list[Row]:
    """Every stage and Figure 7 operation of ``setting``, predicted from its two calibrations."""
    label = rtt_label(setting.nominal_rtt_s)
    pair = (before, after)
    # The agent's path beyond the echo, per round trip: 0 at RTT 0, where the calibrations'
    # client time already holds it. The agent's round trip carries the echo's path and more, so
    # a probe below the echo (its echoes and runs met the load at other moments) is noise: 0.
    path_s = max(0.0, setting.agent_path.excess.median) if setting.agent_path is not None else 0.0
    at_run = [_stage_prediction(c, setting.run_rtt_s, path_s) for c in pair]
    at_nominal = [_stage_prediction(c, setting.nominal_rtt_s + c.run_rtt_s, path_s) for c in pair]
    rows: list[Row] = []
    for stage in STAGES:
        predicted = statistics.fmean(p[stage] for p in at_run)
        calibration = statistics.fmean(c.run_s[stage] for c in pair)
        index = STAGES.index(stage)
        round_trips = statistics.fmean(model_round_trips(c.model, c.stages[index]) for c in pair)
        terms = {
            "calibration_s": calibration,
            "calibration_gap_pct": abs(before.run_s[stage] - after.run_s[stage])
            / calibration
            * 100,
            "network_model_s": predicted - calibration,
            "network_measured_s": setting.andrew_s[stage] - calibration,
            "client_model_s": statistics.fmean(c.client_s[stage] for c in pair),
            "round_trips_model": round_trips,
            "round_trips_trace": float(setting.round_trips[stage]),
            "path_per_round_trip_s": path_s,
            "path_model_s": path_s * round_trips,
        }
        note = "" if setting.same_as_native[stage] else "output differs from native"
        rows.append(
            Row(
                label,
                setting.nominal_rtt_s * 1e3,
                setting.run_rtt_s * 1e3,
                "andrew",
                stage,
                setting.andrew_s[stage],
                predicted,
                statistics.fmean(p[stage] for p in at_nominal),
                terms=terms,
                note=note,
            )
        )
    # A Figure 7 operation: the same calls at RTT 0, alternating with these (their
    # calibration), plus what the model says the latency adds.
    model = _pair_model(before, after)
    base = statistics.fmean(c.echo_rtt_s for c in pair)
    for name, operations in FIGURE7_OPERATIONS.items():
        calibration = setting.figure7_base_s[name]
        round_trips = sum(model.cost(op, n).round_trips for op, n in operations)
        if setting.echo_samples_s and setting.echo_base_samples_s:
            added = link_time(setting.echo_samples_s, round(round_trips)) - link_time(
                setting.echo_base_samples_s, round(round_trips)
            )
        else:
            added = simulate_operations(
                model, operations, setting.network_rtt_s, LINK_BANDWIDTH
            ) - simulate_operations(model, operations, setting.figure7_base_rtt_s, LINK_BANDWIDTH)
        added_nominal = simulate_operations(
            model, operations, setting.nominal_rtt_s + base, LINK_BANDWIDTH
        ) - simulate_operations(model, operations, base, LINK_BANDWIDTH)
        terms = {
            "calibration_s": calibration,
            "network_model_s": added,
            "network_measured_s": setting.figure7_s[name] - calibration,
            "round_trips_model": round_trips,
        }
        rows.append(
            Row(
                label,
                setting.nominal_rtt_s * 1e3,
                setting.network_rtt_s * 1e3,
                "figure7",
                name,
                setting.figure7_s[name],
                calibration + added,
                calibration + added_nominal,
                terms=terms,
            )
        )
    return rows


def combine(runs: Sequence[list[Row]]) -> list[Row]:
    """One row per setting and stage or operation: the medians of its repeats, with each repeat.

    Args:
        runs: each measured run's rows (from :func:`predict`), in the order they were made.
    """
    groups: dict[tuple[str, str, str], list[Row]] = {}
    for rows in runs:
        for row in rows:
            groups.setdefault((row.setting, row.kind, row.name), []).append(row)
    combined: list[Row] = []
    for repeats in groups.values():
        first = repeats[0]
        notes = sorted({r.note for r in repeats if r.note})
        combined.append(
            Row(
                first.setting,
                first.nominal_rtt_ms,
                statistics.median(r.network_rtt_ms for r in repeats),
                first.kind,
                first.name,
                statistics.median(r.measured_s for r in repeats),
                statistics.median(r.predicted_s for r in repeats),
                statistics.median(r.predicted_nominal_s for r in repeats),
                [r.measured_s for r in repeats],
                [r.predicted_s for r in repeats],
                {t: statistics.median(r.terms[t] for r in repeats) for t in first.terms},
                note="; ".join(notes),
            )
        )
    return combined
