"""Human votes from the app's blind comparison: one JSON object a line in `runs/<corpus>/votes.jsonl`.

Row: {"time": ISO 8601, "question": str, "a": variant, "b": variant, "vote": "A"|"B"|"tie"|"both_bad"}.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

VOTES = ("A", "B", "tie", "both_bad")
_lock = threading.Lock()  # threads of one app; flock below covers several processes


def append_vote(path: Path, question: str, a: str, b: str, vote: str, now: datetime | None = None) -> dict:
    """Append one vote as a single line; a reader never sees half a row."""
    if vote not in VOTES:
        raise ValueError(f"vote must be one of {', '.join(VOTES)}, got {vote!r}")
    row = {"time": (now or datetime.now(timezone.utc)).isoformat(timespec="seconds"),
           "question": question, "a": a, "b": b, "vote": vote}
    line = (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    with _lock:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            _flock(fd)
            os.write(fd, line)  # one write of one line with O_APPEND: appended whole
        finally:
            os.close(fd)  # closing releases the flock
    return row


def _flock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # Windows: the thread lock still serialises one app
        return
    fcntl.flock(fd, fcntl.LOCK_EX)


def read_votes(path: Path) -> list[dict]:
    """Every well-formed vote in the file (a torn or hand-edited line is skipped, not fatal)."""
    if not path.exists():
        return []
    rows = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(raw)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and row.get("vote") in VOTES and row.get("a") and row.get("b"):
            rows.append(row)
    return rows


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
