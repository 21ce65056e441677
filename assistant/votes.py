"""Human votes from the app's blind comparison: one JSON object a line in `runs/<corpus>/votes.jsonl`.

Row: {"time": ISO 8601, "question": str, "a": variant, "b": variant, "vote": "A"|"B"|"tie"|"both_bad"}.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

from .storage import append_jsonl, read_jsonl

VOTES = ("A", "B", "tie", "both_bad")


def append_vote(path: Path, question: str, a: str, b: str, vote: str, now: datetime | None = None) -> dict:
    """Append one vote as a single line; a reader never sees half a row."""
    if vote not in VOTES:
        raise ValueError(f"vote must be one of {', '.join(VOTES)}, got {vote!r}")
    row = {"time": (now or datetime.now(timezone.utc)).isoformat(timespec="seconds"),
           "question": question, "a": a, "b": b, "vote": vote}
    append_jsonl(path, [row])  # under the file's lock: the app's threads and other processes alike
    return row


def read_votes(path: Path) -> list[dict]:
    """Every well-formed vote in the file (a torn or hand-edited line is skipped, not fatal)."""
    return [r for r in read_jsonl(path) if r.get("vote") in VOTES and r.get("a") and r.get("b")]


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (sensible at small n and at 0 or n)."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def win_rates(votes: Iterable[dict]) -> list[dict]:
    """Per variant: comparisons, wins, ties, losses, both-bad, and the win rate with its 95% interval."""
    stats: dict[str, dict] = {}
    for v in votes:
        for side, other in (("A", "B"), ("B", "A")):
            name = v["a"] if side == "A" else v["b"]
            s = stats.setdefault(name, {"variant": name, "votes": 0, "wins": 0, "ties": 0, "losses": 0, "both_bad": 0})
            s["votes"] += 1
            s["wins" if v["vote"] == side else "losses" if v["vote"] == other
              else "ties" if v["vote"] == "tie" else "both_bad"] += 1
    out = []
    for s in sorted(stats.values(), key=lambda s: (-s["wins"] / s["votes"], s["variant"])):
        lo, hi = wilson(s["wins"], s["votes"])
        out.append({**s, "win_rate": s["wins"] / s["votes"], "low": lo, "high": hi})
    return out
