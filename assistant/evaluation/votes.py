"""Human votes from the app's blind comparison: one JSON object a line in `runs/<corpus>/votes.jsonl`.

Row: {"time": ISO 8601, "question": str, "a": variant, "b": variant, "vote": "A"|"B"|"tie"|"both_bad"}.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

from assistant.storage import append_jsonl, read_jsonl

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


def tally(votes: Iterable[dict]) -> dict[str, dict]:
    """THE vote count (the app's table and the report both use it): per variant, its wins, ties,
    losses and both-bad, and one 1/0 'won' entry per comparison. A vote of a variant against
    itself is not a comparison."""
    stats: dict[str, dict] = {}
    for v in votes:
        if v["a"] == v["b"]:
            continue
        for name, mine, theirs in ((v["a"], "A", "B"), (v["b"], "B", "A")):
            s = stats.setdefault(name, {"win": 0, "tie": 0, "loss": 0, "both_bad": 0, "won": []})
            key = "win" if v["vote"] == mine else "loss" if v["vote"] == theirs else v["vote"]
            s[key] += 1
            s["won"].append(float(key == "win"))
    return stats


def win_rates(votes: Iterable[dict]) -> list[dict]:
    """Per variant: comparisons, wins, ties, losses, both-bad, and the win rate (wins / comparisons;
    ties and 'both bad' are not wins) with its 95% Wilson interval."""
    out = []
    for name, s in tally(votes).items():
        n = len(s["won"])
        lo, hi = wilson(s["win"], n)
        out.append({"variant": name, "votes": n, "wins": s["win"], "ties": s["tie"], "losses": s["loss"],
                    "both_bad": s["both_bad"], "win_rate": s["win"] / n, "low": lo, "high": hi})
    return sorted(out, key=lambda r: (-r["win_rate"], r["variant"]))
