"""Join generated answers (answers/*.jsonl) with hand labels (decisions/*.tsv) into labelled.jsonl.

A decisions file holds one line per labelled answer: `qa_id<TAB>label<TAB>note`, written by a
person who read the answer against the reference and the source document. Answers without a
decision line are left out. Probe rows already in labelled.jsonl are kept as they are.

Run: python evals/labels/merge.py && python evals/labels/split.py
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
LABELLED = HERE / "labelled.jsonl"
LABELS = {"correct", "abstained", "hallucinated"}


def real_rows() -> list[dict]:
    rows = []
    for tsv in sorted((HERE / "decisions").glob("*.tsv")):
        answers = {}
        for line in (HERE / "answers" / f"{tsv.stem}.jsonl").read_text().splitlines():
            a = json.loads(line)
            answers[a["qa_id"]] = a
        for n, line in enumerate(tsv.read_text().splitlines(), 1):
            if not line.strip():
                continue
            qa_id, label, note = (line.split("\t") + [""])[:3]
            if label not in LABELS or qa_id not in answers:
                raise SystemExit(f"{tsv}:{n}: unknown label {label!r} or question {qa_id!r}")
            a = answers[qa_id]
            rows.append({
                "id": a["id"], "corpus": a["corpus"], "variant": a["variant"], "probe_kind": "real",
                "question": a["question"], "answer": a["answer"], "kind": a["kind"], "reference": a["reference"],
                "key_facts": a["key_facts"], "source": a["source"], "label": label, "note": note,
                "qa_id": qa_id, "slice": a["slice"], "declined_by_gate": a["declined_by_gate"],
            })
            if a.get("batch"):  # a later labelling round (answer.py --tag): agreement is reported per batch
                rows[-1]["batch"] = a["batch"]
            if a.get("adapter"):  # answered through a training checkpoint, not the finished adapter
                rows[-1]["adapter"] = a["adapter"]
    return rows


def main() -> None:
    kept = []
    if LABELLED.exists():
        kept = [json.loads(l) for l in LABELLED.read_text().splitlines() if l.strip()]
        kept = [r for r in kept if r["probe_kind"] != "real"]
    real = real_rows()
    rows = kept + real
    assert len({r["id"] for r in rows}) == len(rows), "duplicate ids"
    LABELLED.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(f"{len(rows)} rows: {len(kept)} probes, {len(real)} real answers -> {LABELLED.name}")


if __name__ == "__main__":
    main()
