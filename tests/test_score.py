"""`assistant score`: answers from any system, scored by the same rules; agreement with labels.

The held-out agreement test reads tests/fixtures/labels/heldout.jsonl (labels the rules were never
tuned on, issue 12) and fails below the measured floor; 90% is the goal.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from assistant.cli import main
from assistant.evaluation import external as X

ROOT = Path(__file__).parent.parent
LABELS = Path(__file__).parent / "fixtures" / "labels"


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_score_fills_from_corpus_writes_rows_and_prints_agreement(tiny_corpus_dir, tmp_path, capsys):
    answers = _write(tmp_path / "answers.jsonl", [
        # id of a corpus QA row: reference, key facts, kind and source come from the corpus
        {"id": "ret-001-c", "answer": "Twenty-one days after delivery.", "label": "correct"},
        {"id": "ret-001-c-x", "qa_id": "ret-001-c", "answer": "Not 21 days.", "label": "hallucinated"},
        {"id": "own-1", "question": "How long is the return window?", "answer": "7, 14 or 21 days.",
         "key_facts": ["21 days"], "label": "hallucinated"},
        {"id": "own-2", "question": "Who founded Pedalo?", "kind": "unanswerable",
         "answer": "That isn't covered in our help centre.", "label": "correct"},
        {"id": "own-3", "question": "How long is the return window?", "answer": "I have no idea.",
         "key_facts": ["21 days"], "label": "hallucinated"},  # the scorer says abstained: a disagreement
    ])
    out = tmp_path / "scored.jsonl"
    assert main(["score", str(answers), "--corpus", str(tiny_corpus_dir), "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["outcome"] for r in rows] == ["correct", "hallucinated", "hallucinated", "correct", "abstained"]
    assert rows[0]["key_facts"] == ["21 days"] and rows[0]["source"] == "docs/returns.md"
    assert rows[1]["reason"] == "negates key fact '21 days'"
    assert rows[2]["reason"].startswith("competing values: 7, 14, 21")
    assert {r["scoring_path"] for r in rows} == {"key_facts", "decline"}
    printed = capsys.readouterr().out
    assert "agreement with 5 labels: 80%" in printed and "Cohen's kappa" in printed
    assert "confusion matrix" in printed


def test_agreement_kappa_and_confusion_matrix():
    rows = [{"label": h, "outcome": s, "scoring_path": "key_facts"} for h, s in
            [("correct", "correct")] * 6 + [("hallucinated", "hallucinated")] * 3 + [("abstained", "abstained")]
            + [("correct", "hallucinated"), ("unsupported", "hallucinated")]]
    a = X.agreement(rows)
    assert a["n"] == 12 and a["overall"]["rate"] == pytest.approx(11 / 12)
    assert a["per_class"]["correct"]["rate"] == pytest.approx(6 / 7)
    assert a["confusion"] == [[6, 0, 1], [0, 1, 0], [0, 0, 4]]
    from sklearn.metrics import cohen_kappa_score

    h = ["correct"] * 7 + ["hallucinated"] * 4 + ["abstained"]
    s = ["correct"] * 6 + ["hallucinated"] * 5 + ["abstained"]
    assert a["kappa"] == pytest.approx(cohen_kappa_score(sorted(h), sorted(s)))


@pytest.mark.parametrize("line, message", [
    ("{not json", "invalid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"question": "q"}', "missing 'id', 'answer'"),
    ('{"id": "a", "answer": "x", "kind": "weird"}', "kind 'weird' is not one of"),
    ('{"id": "a", "answer": "x", "key_facts": "21 days"}', "'key_facts' must be a list of strings"),
    ('{"id": "a", "answer": "x", "label": "great"}', "label 'great' is not one of"),
    ('{"id": "a", "answer": 3}', "'answer' must be a string"),
])
def test_bad_lines_name_file_and_line_and_exit_2(tiny_corpus_dir, tmp_path, capsys, line, message):
    answers = _write(tmp_path / "answers.jsonl", [{"id": "ok", "answer": "fine"}, line])
    assert main(["score", str(answers), "--corpus", str(tiny_corpus_dir)]) == 2
    err = capsys.readouterr().err
    assert f"{answers}:2: {message}" in err and "Traceback" not in err


def test_missing_file_and_duplicate_ids_exit_2(tiny_corpus_dir, tmp_path, capsys):
    assert main(["score", str(tmp_path / "nope.jsonl"), "--corpus", str(tiny_corpus_dir)]) == 2
    answers = _write(tmp_path / "a.jsonl", [{"id": "x", "answer": "a"}, {"id": "x", "answer": "b"}])
    assert main(["score", str(answers), "--corpus", str(tiny_corpus_dir)]) == 2
    assert "a.jsonl:2: duplicate id 'x'" in capsys.readouterr().err


def _labelled(name: str) -> list[dict]:
    path = LABELS / name
    if not path.exists():
        pytest.skip(f"{path} not present (labels land from the `labels` branch)")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _score_by_corpus(rows: list[dict]) -> list[dict]:
    from assistant.corpus import load_corpus

    out = []
    for name in sorted({r.get("corpus", "ecostride") for r in rows}):
        if not (ROOT / "corpora" / name).is_dir():
            pytest.skip(f"corpora/{name} not present (it lands from the `labels` branch)")
        corpus = load_corpus(ROOT / "corpora" / name)
        out += X.score_answers(corpus, [r for r in rows if r.get("corpus", "ecostride") == name])
    return out


def _report(name: str, rows: list[dict]) -> float:
    a = X.agreement(rows)
    print(f"\n{name}: agreement {a['overall']['rate']:.1%} on {a['n']} labels, kappa {a['kappa']:.2f}")
    for field in ("probe_kind", "corpus", "variant"):
        for v, b in X.agreement_by(rows, field).items():
            print(f"  {field} {v}: {b['overall']['rate']:.1%} (n={b['n']})")
    misses = Counter((r.get("probe_kind") or r.get("variant"), r["label"], r["outcome"]) for r in rows
                     if X.LABEL_ALIASES.get(r["label"], r["label"]) != r["outcome"])
    for k, n in misses.most_common():
        print(f"  miss {k}: {n}")
    return a["overall"]["rate"]


def test_tuning_half_agreement():
    """The half the rules were tuned on: a regression guard, not evidence."""
    assert _report("tune", _score_by_corpus(_labelled("tune.jsonl"))) >= 0.90


# Measured once per rule change, never tuned on (2026-11-25): 85.3% of 662 held-out labels (95% CI
# 82.6-88.1), batch v1 88.0%, batch v2 (an independent labeller's probes) 78.4%, batch v3 (another
# labeller's real sft/rag_sft answers, added with the rules unchanged) 95.5%, batch v4 (real
# python-faq answers and probes by two more labellers) 79.6%; ecostride 91.0%, python-faq 77.1%.
# The goal is 90% (issue #12 stays open until then); this floor guards what was
# measured against regressions without tuning on the held-out half.
HELDOUT_FLOOR = 0.85


def test_heldout_agreement_floor():
    """Labels the rules never saw while they were written (issue 12: report this number, not the tuning one)."""
    assert _report("held-out", _score_by_corpus(_labelled("heldout.jsonl"))) >= HELDOUT_FLOOR


def test_results_rows_carry_reason_and_scoring_path_per_slice():
    from assistant.evaluation.scoring import scoring_paths

    rows = [{"slice": "paraphrase", "scoring_path": "key_facts"}, {"slice": "paraphrase", "scoring_path": "similarity"},
            {"slice": "unanswerable", "scoring_path": "decline"}, {"slice": "paraphrase", "scoring_path": "key_facts"}]
    assert scoring_paths(rows) == {"paraphrase": {"key_facts": 2, "similarity": 1}, "unanswerable": {"decline": 1}}
