"""Split evals/labels/labelled.jsonl into a tuning half and a held-out half.

A row's half depends only on its id: sha256("labels-v1:" + id), first byte, even -> tune,
odd -> heldout. Adding or relabelling rows never moves an existing row to the other half.

Run: python evals/labels/split.py [--check]   (--check: exit 1 when the fixtures are stale)
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "evals" / "labels" / "labelled.jsonl"
OUT = ROOT / "tests" / "fixtures" / "labels"
SEED = "labels-v1:"

FIELDS = ("id", "corpus", "variant", "probe_kind", "question", "answer", "kind", "reference", "key_facts",
          "source", "label", "note")
ALLOWED = {
    "corpus": {"ecostride", "python-faq", "probe"},
    "variant": {"prompted", "rag", "sft", "rag_sft", "probe"},
    "probe_kind": {"real", "paraphrase", "negation", "wrong_extra", "shotgun", "hedge", "abstention"},
    "kind": {"answerable", "unanswerable", "general", "safety"},
    "label": {"correct", "abstained", "hallucinated"},
}


def half(row_id: str) -> str:
    return "tune" if hashlib.sha256((SEED + row_id).encode()).digest()[0] % 2 == 0 else "heldout"


def load(path: Path = SOURCE) -> list[dict]:
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        missing = [f for f in FIELDS if f not in row]
        bad = [f"{f}={row[f]!r}" for f, ok in ALLOWED.items() if f in row and row[f] not in ok]
        if missing or bad:
            sys.exit(f"{path}:{n}: missing {missing} / bad {bad}")
        rows.append(row)
    ids = [r["id"] for r in rows]
    dupes = [i for i, c in collections.Counter(ids).items() if c > 1]
    if dupes:
        sys.exit(f"{path}: duplicate ids {dupes[:5]}")
    return rows


def render(rows: list[dict]) -> dict[str, str]:
    halves: dict[str, list[str]] = {"tune": [], "heldout": []}
    for row in sorted(rows, key=lambda r: r["id"]):
        halves[half(row["id"])].append(json.dumps(row, ensure_ascii=False) + "\n")
    return {name: "".join(lines) for name, lines in halves.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when the fixture files are out of date")
    args = parser.parse_args()
    rows = load()
    texts = render(rows)
    if args.check:
        stale = [n for n, t in texts.items() if not (OUT / f"{n}.jsonl").exists()
                 or (OUT / f"{n}.jsonl").read_text() != t]
        if stale:
            print(f"stale: {stale}; run python evals/labels/split.py")
            return 1
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        (OUT / f"{name}.jsonl").write_text(text)
    count = collections.Counter((half(r["id"]), r["corpus"], r["variant"], r["label"]) for r in rows)
    for name in ("tune", "heldout"):
        print(name, sum(v for k, v in count.items() if k[0] == name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
