"""The network settings users name: ``lan``, ``wan`` or a round-trip time."""

from __future__ import annotations

import argparse
import re

from simulation.model import LAN_RTT, WAN_RTT

__all__ = ["parse_network"]


def parse_network(text: str) -> float:
    """``lan`` (130 us), ``wan`` (654 us) or a round-trip time such as ``50ms`` or ``0.2`` (ms)."""
    presets = {"lan": LAN_RTT, "wan": WAN_RTT}
    if text.lower() in presets:
        return presets[text.lower()]
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(us|ms|s)?", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(
            f"network must be lan, wan or a round-trip time like 50ms, not {text!r}"
        )
    value = float(match.group(1))
    unit = match.group(2) or "ms"
    seconds = value * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[unit]
    if not 0 < seconds <= 10:
        raise argparse.ArgumentTypeError(
            f"round-trip time must be above 0 and at most 10 s, not {text!r}"
        )
    return seconds
