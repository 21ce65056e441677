"""Human labels: the JSONL contract, agreement with the scorer (CI, kappa), the prediction-powered
corrected rates, the label queue, and the app's "Label answers" tab without a browser."""

from __future__ import annotations

import io
import dataclasses
import json
import re

import pytest

from assistant.evaluation import labels, scoring
from assistant.config import VerdictRules
from assistant.errors import UsageError
from assistant.corpus.corpus import Document
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
    assert set(lines[0]) == {"slice", "id", "variant", "question", "answer", "answer_sha256", "label", "labeller",
                             "time"}
    assert lines[0]["answer_sha256"] == labels.answer_hash(r["answer"])
    got = labels.read_labels(path)
    assert list(got) == [("paraphrase", "q1", "rag")] and got["paraphrase", "q1", "rag"]["label"] == "correct"
    assert got["paraphrase", "q1", "rag"]["labeller"] == "ana"
    with pytest.raises(UsageError):
        labels.append_label(path, r, "wrong", "ana")


def test_agreement_with_interval_kappa_and_confusion():
    scorer = ["correct"] * 8 + ["hallucinated"] * 8 + ["abstained"] * 4
    human = ["correct"] * 7 + ["hallucinated"] + ["hallucinated"] * 8 + ["abstained"] * 3 + ["correct"]
    a = scoring.agreement(scorer, human, 2000, 0)
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


def test_label_summary_in_metrics(tiny_corpus):
    rows = [row("prompted", i, "correct" if i < 35 else "hallucinated") for i in range(60)]
    rows += [row("rag", i, "correct" if i < 45 else "abstained") for i in range(60)]
    assert scoring.label_summary(tiny_corpus, rows) is None  # no labels yet
    path = labels.labels_path(tiny_corpus)
    for r in rows:
        if r["variant"] == "rag" and 33 <= int(r["id"][1:]) < 45:
            labels.append_label(path, r, "hallucinated", "ana")
        elif r["variant"] == "rag" and int(r["id"][1:]) < 5:
            labels.append_label(path, r, "correct", "ben")
    s = scoring.label_summary(tiny_corpus, rows)
    assert s["matched"] == 17 and s["labellers"] == ["ana", "ben"]
    assert s["agreement"]["agree"] == 5 and s["agreement"]["n"] == 17
    assert s["text"].startswith("Human labels: the scorer agrees with 5 of 17 labelled answers (29%")
    assert "verdict" not in s["text"]  # one verdict: decide() reads the corrected rates itself
    with_labels = decide(rows, tiny_corpus.config.verdict, labels=labels.read_labels(path))
    assert with_labels.estimates == "corrected" and with_labels.recommendation != "rag"
    # the prediction-powered estimates and the scorer's bias where people looked
    rag = s["corrected"]["rag"]["answerable"]["correct"]
    assert rag["labelled"] == 17 and rag["n"] == 60 and rag["automatic"] == pytest.approx(0.75)
    assert rag["corrected"] < rag["automatic"] and rag["ci"][0] <= rag["corrected"] <= rag["ci"][1]
    assert s["corrected"]["prompted"]["answerable"]["correct"]["corrected"] is None  # none of its answers labelled
    assert s["scorer_bias"]["rag"] == {"labelled": 17, "correct": pytest.approx(12 / 17),
                                       "hallucinated": pytest.approx(-12 / 17), "abstained": 0.0}
    diff = s["differences"]["prompted - rag"]["correct"]
    assert diff["labelled"] == 0 and diff["corrected"] is None and diff["diff"] == pytest.approx(35 / 60 - 45 / 60)
    assert s["sampled"] == 0 and s["skipped"] == 0
    assert "Answerable accuracy corrected by the labels" in s["text"] and "rag " in s["text"].split("corrected")[-1]
    json.dumps(s, allow_nan=False)  # metrics.json stays valid JSON


# -- the label queue: the sample, the terminal and the app's tab -----------------------------
def write_eval(corpus, rows: list[dict]) -> None:
    latest = corpus.runs_dir / "eval" / "20260101-000000"
    latest.mkdir(parents=True, exist_ok=True)
    (latest / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    link = corpus.runs_dir / "eval" / "latest"
    if not link.exists():
        link.symlink_to(latest.name)


def many_rows(questions: int = 30) -> list[dict]:
    rows = []
    for i in range(questions):
        for v in ("prompted", "rag", "sft"):
            rows.append(row(v, i, "declined_by_gate" if v == "rag" and i % 5 == 0 else "correct",
                            "unanswerable" if i % 4 == 0 else "paraphrase"))
            rows[-1]["answer"] = f"It takes {i} days (answer {len(rows)})."
    return rows


def test_sample_draws_whole_questions_uniformly_and_extends_with_n():
    rows = many_rows()
    items = labels.sample(rows, n=20, seed=3)
    questions = [(r["slice"], r["id"]) for r in items]
    assert not any(r["outcome"] == "declined_by_gate" for r in items)
    # whole questions: every eligible answer of each drawn question, the questions kept together
    for q in set(questions):
        want = {r["variant"] for r in rows if (r["slice"], r["id"]) == q and r["outcome"] != "declined_by_gate"}
        assert {r["variant"] for r in items if (r["slice"], r["id"]) == q} == want
    assert 20 <= len(items) < 23 and [r["sample"]["rank"] for r in items] == sorted(r["sample"]["rank"] for r in items)
    assert labels.sample(rows, n=40, seed=3)[:len(items)] == items  # a larger n extends the same queue
    assert labels.sample(rows, n=20, seed=4) != items
    assert labels.sample(list(reversed(rows)), n=20, seed=3) == items  # the order of results.jsonl is irrelevant
    # the variant order within questions varies (position says nothing about the variant)
    firsts = {labels.sample(rows, n=None, seed=3)[i]["variant"] for i in range(0, 60, 3)}
    assert len(firsts) > 1
    # uniform over questions: each question is drawn first about equally often
    counts = {}
    for seed in range(3000):
        first = labels.sample(rows, n=1, seed=seed)[0]["id"]
        counts[first] = counts.get(first, 0) + 1
    assert len(counts) == 30 and max(counts.values()) < 2.2 * 3000 / 30
    with pytest.raises(UsageError):
        labels.sample(rows, n=0)


def test_a_label_holds_for_its_answer_text_only(tmp_path):
    path = tmp_path / "labels.jsonl"
    r = row("rag", 1, "correct")
    labels.append_label(path, r, "correct", "ana")
    got = labels.read_labels(path)
    assert labels.label_for(r, got)["label"] == "correct"
    assert labels.label_for({**r, "answer": r["answer"] + " Also 40 days."}, got) is None  # the answer changed
    assert labels.label_for({**r, "outcome": "declined_by_gate"}, got) is None
    # an old label row carries the answer text and no hash: still read, matched by its text
    old = {k: v for k, v in json.loads(path.read_text()).items() if k != "answer_sha256"}
    path.write_text(json.dumps(old) + "\n")
    assert labels.label_for(r, labels.read_labels(path))["labeller"] == "ana"
    # a torn line does not swallow the next label
    with open(path, "a") as f:
        f.write('{"slice": "paraphrase", "id": "q9"')
    labels.append_label(path, row("rag", 2, "correct"), "hallucinated", "ana")
    assert set(labels.read_labels(path)) == {("paraphrase", "q1", "rag"), ("paraphrase", "q2", "rag")}


def test_undo_removes_the_latest_entry_of_the_queue_only(tmp_path):
    path = tmp_path / "labels.jsonl"
    a, b, c = row("rag", 1, "correct"), row("rag", 2, "correct"), row("sft", 3, "correct")
    labels.append_label(path, a, "correct", "ana")
    labels.append_label(path, b, "skip", "ana")
    labels.append_label(path, c, "hallucinated", "ben")  # not in the queue below
    gone = labels.undo_last(path, {labels.key(a), labels.key(b)})
    assert gone["label"] == "skip" and gone["id"] == "q2" and labels.read_skips(path) == set()
    assert labels.undo_last(path, {labels.key(a), labels.key(b)})["id"] == "q1"
    assert labels.undo_last(path, {labels.key(a), labels.key(b)}) is None
    assert set(labels.read_labels(path)) == {labels.key(c)}


def run_terminal(corpus, keys: str, n: int = 9, **kw) -> tuple[dict, str]:
    out = io.StringIO()
    got = labels.label_queue(corpus, list(keys), out, n=n, seed=5, labeller="ana", **kw)
    return got, out.getvalue()


def test_terminal_queue_labels_skips_undoes_and_resumes(tiny_corpus):
    rows = many_rows()
    write_eval(tiny_corpus, rows)
    items = labels.sample(rows, n=9, seed=5)
    got, text = run_terminal(tiny_corpus, "cxhq")
    assert (got["labelled"], got["done"], got["total"]) == (2, 2, len(items))
    assert "'x' is not a key here" in text and text.count("QUESTION (") == 3
    stored = labels.read_labels(labels.labels_path(tiny_corpus))
    assert [stored[labels.key(r)]["label"] for r in items[:2]] == ["correct", "hallucinated"]
    assert stored[labels.key(items[0])]["sample"] == {"seed": 5, "rank": 0}
    # blind: neither the variant nor the scorer's outcome is shown; the passage text is
    card = text.split("QUESTION (")[1]
    assert not re.search(r"\b(prompted|rag|sft|scorer|outcome|declined_by_gate)\b", card)
    assert "Bikes can be returned within 21 days" in text and "docs/returns.md > Returns" in text
    # resume where it stopped: skip the third, undo the skip, then abstain on it; end of keys = quit
    got, text = run_terminal(tiny_corpus, "sua")
    assert "undo: removed the skip" in text and (got["labelled"], got["skipped"], got["undone"]) == (1, 1, 1)
    stored = labels.read_labels(labels.labels_path(tiny_corpus))
    assert stored[labels.key(items[2])]["label"] == "abstained" and got["done"] == 3
    assert labels.read_skips(labels.labels_path(tiny_corpus)) == set()
    # undo in a new session takes back the previous session's last label
    got, _ = run_terminal(tiny_corpus, "uq")
    assert got["undone"] == 1 and got["done"] == 2
    got, text = run_terminal(tiny_corpus, "c" * 20)
    assert got["done"] == got["total"] == len(items) and got["left"] == 0 and "Every answer of the sample" in text


def test_terminal_queue_needs_an_evaluation(tiny_corpus):
    with pytest.raises(UsageError, match="assistant eval"):
        run_terminal(tiny_corpus, "q")


def test_passages_show_the_document_section_for_every_variant_alike(tiny_corpus):
    rows = [row("prompted", 1, "correct"), {**row("rag", 1, "correct"), "sources": [
        {"path": "docs/returns.md", "heading": "Returns > Refunds", "score": 0.8, "rank": 1},
        {"path": "docs/service.md", "heading": "Nowhere", "score": 0.5, "rank": 2}]}]
    rows[0]["sources"] = []
    rows[0]["source"] = rows[1]["source"] = "docs/returns.md"
    rows[0]["reference"] = rows[1]["reference"] = "Within 21 days of delivery."
    chunks = tiny_corpus.runs_dir / "rag" / "chunks.jsonl"
    chunks.parent.mkdir(parents=True)
    overlapping = ["Refunds are paid to the original payment method within 6", "within 6 business days of the return"]
    chunks.write_text("".join(json.dumps({"id": i, "path": "docs/returns.md", "heading": "Returns > Refunds",
                                          "text": t}) + "\n" for i, t in enumerate(overlapping)))
    p = labels.Passages(tiny_corpus, rows)
    shown = p.for_row(rows[0])
    assert shown == p.for_row(rows[1])  # the closed-book answer gets the same passages: blind
    assert "21 days of delivery" in shown[0]["text"]  # the gold section of the reference's document
    # the document's section, not the index's overlapping chunks joined (which repeat "within 6")
    assert shown[1]["text"].count("within 6") == 1 and "Lisbon warehouse" in shown[1]["text"]
    assert "text not found" in shown[2]["text"]
    without_docs = dataclasses.replace(tiny_corpus, documents=[])  # no document to read: the chunks
    assert labels.Passages(without_docs, rows).text("docs/returns.md", "Returns > Refunds") == "\n\n".join(overlapping)


def test_the_gold_passage_is_the_answering_section_of_a_long_document(tiny_corpus):
    filler = "\n\n".join(f"## Topic {i}\n\n" + "Shoes are made of recycled materials. " * 12 for i in range(4))
    doc = f"# Careers\n\n{filler}\n\n## Internships\n\nPaid 6-month internships start in February and September.\n"
    assert 1500 < len(doc) < 4000  # longer than a card shows, shorter than the scorer narrows
    corpus = dataclasses.replace(tiny_corpus, documents=[Document("docs/careers.md", doc)])
    r = {**row("rag", 1, "correct"), "source": "docs/careers.md", "question": "Are internships paid?",
         "reference": "Yes: paid 6-month internships, starting in February and September."}
    gold = labels.Passages(corpus, [r]).gold(r)
    assert gold["text"].startswith("## Internships") and "February and September" in gold["text"]


# -- the app's tab, without a browser ---------------------------------------------------------
def test_label_tab_serves_the_same_queue_with_skip_and_undo(tiny_corpus):
    from assistant.serve.app import label_next, label_record, label_undo

    row_none, card, progress = label_next(tiny_corpus)
    assert row_none is None and "No evaluation to label yet" in card
    rows = [row("prompted", 1, "correct"), row("rag", 1, "hallucinated"), row("rag", 2, "declined_by_gate"),
            row("rag", 3, "correct", "unanswerable")]
    rows[1]["answer"] = "Within 30 days."
    write_eval(tiny_corpus, rows)
    order = [labels.key(r) for r in labels.sample(rows, labels.DEFAULT_N, tiny_corpus.config.evaluation.seed)]

    seen = []
    current, card, progress = label_next(tiny_corpus)
    assert progress == "0 of 3 sampled answers labelled (2 questions drawn at random)"  # no gate decline
    current, card, progress = label_record(tiny_corpus, current, "skip", "ana")
    assert progress.endswith("1 skipped")
    current, card, progress = label_undo(tiny_corpus)
    assert labels.key(current) == order[0] and progress.startswith("0 of 3")
    while current is not None:
        assert current["outcome"] != "declined_by_gate"
        assert current["question"] in card and current["answer"] in card and "docs/returns.md" in card
        assert "Bikes can be returned within 21 days" in card  # the passage's text, not only its name
        assert not re.search(rf"\b({current['variant']}|scorer|outcome)\b", card)  # blind
        seen.append(labels.key(current))
        current, card, progress = label_record(tiny_corpus, current, "correct", "ana")
    assert seen == order  # the same queue as `assistant label`
    assert progress == "3 of 3 sampled answers labelled (2 questions drawn at random)" and "Every answer" in card
    stored = labels.read_labels(labels.labels_path(tiny_corpus))
    assert set(stored) == set(seen) and {r["labeller"] for r in stored.values()} == {"ana"}
    assert "declining is **correct**" in labels.render(rows[3])


def test_agreement_counts_unverified_as_a_disagreement():
    a = scoring.agreement(["correct", "unverified", "unverified", "hallucinated"],
                         ["correct", "correct", "hallucinated", "hallucinated"], 200, 0)
    assert (a["agree"], a["n"]) == (2, 4)
    assert a["confusion"]["correct"] == {"correct": 1, "abstained": 0, "hallucinated": 0, "unverified": 1}
    assert a["kappa"] is not None and a["kappa"] < 1


def test_seconds_per_label_is_the_median_gap_without_breaks(tmp_path):
    from datetime import datetime, timedelta

    path = tmp_path / "labels.jsonl"
    assert labels.seconds_per_label(path) == labels.SECONDS_PER_LABEL
    t = datetime(2026, 12, 5, 1, 0, 0)
    for i, gap in enumerate([0, 30, 20, 40, 30, 3600, 25, 35, 30, 30, 30, 30]):  # one hour's break
        t += timedelta(seconds=gap)
        labels.append_label(path, row("rag", i, "correct"), "correct", "ana", now=t)
    assert labels.seconds_per_label(path) == 30.0


def test_the_reports_label_table_has_a_column_for_every_scorer_outcome():
    from assistant.evaluation import report

    agree = scoring.agreement(["correct", "unverified", "hallucinated"], ["correct", "correct", "hallucinated"])
    lines = report.labels_section({"text": "t", "agreement": agree, "path": "labels.jsonl", "matched": 3,
                                   "labels": 3, "labellers": ["ann"]})
    table = [line for block in lines for line in block.splitlines() if line.startswith("|") and "---" not in line]
    assert "scorer: unverified" in table[0]
    assert {line.count("|") for line in table} == {table[0].count("|")}  # every row as wide as the header
