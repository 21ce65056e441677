"""Human labels: the JSONL contract, agreement with the scorer (CI, kappa), the verdict recomputed
with human outcomes, and the app's "Label answers" tab without a browser."""

from __future__ import annotations

import json
import re

import pytest

from assistant import labels
from assistant.config import VerdictRules
from assistant.errors import UsageError
from assistant.evaluation.verdict import decide


def row(variant: str, i: int, outcome: str, slice_: str = "paraphrase") -> dict:
    return {"variant": variant, "slice": slice_, "id": f"q{i}", "question": f"question {i}?",
            "answer": f"It takes {i} days.", "outcome": outcome, "reference": f"reference {i}",
            "key_facts": ["30 days"], "sources": [{"path": "docs/returns.md", "heading": "Returns", "score": 0.71}]}


def test_label_rows_follow_the_contract_and_the_latest_label_wins(tmp_path):
    path = tmp_path / "labels.jsonl"
    r = row("rag", 1, "correct")
    labels.append_label(path, r, "hallucinated", "ana")
    labels.append_label(path, r, "correct", " ana ")
    with open(path, "a") as f:
        f.write('{"slice": "paraphrase", "id": "q1"')  # torn line
    lines = [json.loads(x) for x in path.read_text().splitlines()[:2]]
    assert set(lines[0]) == {"slice", "id", "variant", "question", "answer", "answer_sha256", "label", "labeller", "time"}
    assert lines[0]["answer_sha256"] == labels.answer_hash(r["answer"])
    got = labels.read_labels(path)
    assert list(got) == [("paraphrase", "q1", "rag")] and got["paraphrase", "q1", "rag"]["label"] == "correct"
    assert got["paraphrase", "q1", "rag"]["labeller"] == "ana"
    with pytest.raises(UsageError):
        labels.append_label(path, r, "wrong", "ana")


def test_agreement_with_interval_kappa_and_confusion():
    scorer = ["correct"] * 8 + ["hallucinated"] * 8 + ["abstained"] * 4
    human = ["correct"] * 7 + ["hallucinated"] + ["hallucinated"] * 8 + ["abstained"] * 3 + ["correct"]
    a = labels.agreement(scorer, human, 2000, 0)
    assert (a["agree"], a["n"]) == (18, 20) and a["rate"] == pytest.approx(0.9)
    assert a["lo"] < 0.9 < a["hi"]
    # kappa by hand: p_o = 0.9; p_e = (8*8 + 9*8 + 3*4) / 400 = 0.37; (0.9 - 0.37) / 0.63
    assert a["kappa"] == pytest.approx((0.9 - 0.37) / 0.63)
    assert a["confusion"]["hallucinated"] == {"correct": 1, "abstained": 0, "hallucinated": 8}
    assert a["per_class"]["abstained"]["rate"] == pytest.approx(1.0) and a["per_class"]["correct"]["n"] == 8


def test_labels_of_changed_answers_and_gate_declines_are_not_matched():
    rows = [row("rag", 1, "correct"), row("rag", 2, "declined_by_gate")]
    lab = {labels.key(r): {**r, "label": "abstained", "labeller": "x"} for r in rows}
    lab[labels.key(rows[0])]["answer"] = "an older answer"
    assert labels.matched(rows, lab) == []


def test_verdict_flips_when_human_outcomes_replace_the_scorer_s():
    # rag ahead of prompted by 10 questions of 60; a person finds 12 of rag's "correct" answers wrong.
    rows = [row("prompted", i, "correct" if i < 35 else "hallucinated") for i in range(60)]
    rows += [row("rag", i, "correct" if i < 45 else "abstained") for i in range(60)]
    rules = VerdictRules()
    before = decide(rows, rules)
    assert before["recommendation"] == "rag"
    lab = {labels.key(r): {**r, "label": "hallucinated", "labeller": "x"}
           for r in rows if r["variant"] == "rag" and 33 <= int(r["id"][1:]) < 45}
    relabelled, changed = labels.with_human_outcomes(rows, lab)
    assert changed == 12 and sum(r["outcome"] == "correct" for r in relabelled if r["variant"] == "rag") == 33
    assert [r["outcome"] for r in rows if r["variant"] == "rag"].count("correct") == 45  # the input is not touched
    after = decide(relabelled, rules)
    assert after["recommendation"] != "rag"


def test_label_summary_in_metrics(tiny_corpus):
    rows = [row("prompted", i, "correct" if i < 35 else "hallucinated") for i in range(60)]
    rows += [row("rag", i, "correct" if i < 45 else "abstained") for i in range(60)]
    verdict = decide(rows, tiny_corpus.config.verdict)
    assert labels.label_summary(tiny_corpus, rows, verdict) is None  # no labels yet
    path = labels.labels_path(tiny_corpus)
    for r in rows:
        if r["variant"] == "rag" and 33 <= int(r["id"][1:]) < 45:
            labels.append_label(path, r, "hallucinated", "ana")
        elif r["variant"] == "rag" and int(r["id"][1:]) < 5:
            labels.append_label(path, r, "correct", "ben")
    s = labels.label_summary(tiny_corpus, rows, verdict)
    assert s["matched"] == 17 and s["labellers"] == ["ana", "ben"]
    assert s["agreement"]["agree"] == 5 and s["agreement"]["n"] == 17
    w = s["with_labels"]
    assert w["verdict_changes"] and w["recommendation_before"] == "rag" and w["changed_outcomes"] == 12
    assert s["text"].startswith("Human labels: the scorer agrees with 5 of 17 labelled answers (29%")
    assert f"the verdict changes from rag to {w['recommendation'] or 'inconclusive'}" in s["text"]


# -- the app's tab, without a browser ---------------------------------------------------------
def test_label_tab_shows_one_answer_at_a_time_and_records_labels(tiny_corpus):
    from assistant.app import label_next, label_record

    row_none, card, progress = label_next(tiny_corpus)
    assert row_none is None and "No evaluation to label yet" in card
    latest = tiny_corpus.runs_dir / "eval" / "20260101-000000"
    latest.mkdir(parents=True)
    rows = [row("prompted", 1, "correct"), row("rag", 1, "hallucinated"), row("rag", 2, "declined_by_gate"),
            row("rag", 3, "correct", "unanswerable")]
    (latest / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tiny_corpus.runs_dir / "eval" / "latest").symlink_to(latest.name)

    seen = []
    current, card, progress = label_next(tiny_corpus)
    assert progress == "0 of 3 answers of the latest evaluation labelled"  # the gate's decline is not judged
    while current is not None:
        assert current["outcome"] != "declined_by_gate"
        assert current["question"] in card and current["answer"] in card and "docs/returns.md" in card
        assert not re.search(rf"\b({current['variant']}|scorer|outcome)\b", card)  # blind: no variant, no outcome  # blind: no variant name, no outcome
        seen.append(labels.key(current))
        current, card, progress = label_record(tiny_corpus, current, "correct", "ana")
    assert len(seen) == len(set(seen)) == 3
    assert progress == "3 of 3 answers of the latest evaluation labelled" and "Every answer" in card
    stored = labels.read_labels(labels.labels_path(tiny_corpus))
    assert set(stored) == set(seen) and {r["labeller"] for r in stored.values()} == {"ana"}
    assert "declining is **correct**" in labels.render(rows[3])
