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
    # rows: human label, columns: scorer outcome, in M.OUTCOMES order (the scorer may say unverified)
    assert a["confusion"] == [[6, 0, 1, 0], [0, 1, 0, 0], [0, 0, 4, 0], [0, 0, 0, 0]]
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
    from assistant.corpus.corpus import load_corpus

    out = []
    for name in sorted({r.get("corpus", "ecostride") for r in rows}):
        if not (ROOT / "corpora" / name).is_dir():
            pytest.skip(f"corpora/{name} not present (it lands from the `labels` branch)")
        corpus = load_corpus(ROOT / "corpora" / name)
        out += X.score_answers(corpus, [r for r in rows if r.get("corpus", "ecostride") == name])
    return out


def _label(r: dict) -> str:
    return X.LABEL_ALIASES.get(r["label"], r["label"])


def false_credit(rows: list[dict]) -> tuple[int, int]:
    """(scored correct, of all) among the answers a person called hallucinated: the scorer's false credit.
    An `unverified` outcome is no credit."""
    bad = [r for r in rows if _label(r) == "hallucinated"]
    return sum(r["outcome"] == "correct" for r in bad), len(bad)


def _fc(rows: list[dict]) -> str:
    k, n = false_credit(rows)
    return f"{k}/{n} ({k / n:.1%})" if n else "n/a"


def _report(name: str, rows: list[dict]) -> dict:
    """Print agreement (an `unverified` outcome is no agreement), agreement on the verified answers,
    and false credit per corpus, scoring path and probe kind; return the figures the tests check."""
    a = X.agreement(rows)
    verified = [r for r in rows if r["outcome"] != "unverified"]
    v = X.agreement(verified)
    print(f"\n{name}: agreement {a['overall']['rate']:.1%} on {a['n']} labels (kappa {a['kappa']:.2f}); "
          f"{len(rows) - len(verified)} unverified; agreement on the {v['n']} verified {v['overall']['rate']:.1%}; "
          f"false credit {_fc(rows)}")
    for field in ("corpus", "scoring_path", "probe_kind", "variant"):
        for value in sorted({str(r.get(field)) for r in rows}):
            rs = [r for r in rows if str(r.get(field)) == value]
            u = sum(r["outcome"] == "unverified" for r in rs)
            agree = sum(_label(r) == r["outcome"] for r in rs)
            print(f"  {field} {value}: agreement {agree / len(rs):.1%} (n={len(rs)}, unverified {u}), "
                  f"false credit {_fc(rs)}")
    misses = Counter((r.get("probe_kind") or r.get("variant"), r["label"], r["outcome"]) for r in rows
                     if _label(r) != r["outcome"])
    for k, n in misses.most_common():
        print(f"  miss {k}: {n}")
    real_eco = [r for r in rows if r.get("corpus") == "ecostride" and r.get("probe_kind") == "real"]
    return {"verified": v["overall"]["rate"], "false_credit": {c: false_credit([r for r in rows if r.get("corpus") == c])
                                                              for c in {r.get("corpus") for r in rows}},
            "ecostride_real": sum(_label(r) == r["outcome"] for r in real_eco) / len(real_eco)}


FALSE_CREDIT_MAX = 0.05  # issue 25: at most 5% of the hallucinations a person sees may be scored correct, per corpus


def test_tuning_half_agreement():
    """The half the rules were tuned on: a regression guard, not evidence."""
    got = _report("tune", _score_by_corpus(_labelled("tune.jsonl")))
    assert got["verified"] >= 0.94
    assert all(k <= FALSE_CREDIT_MAX * n for k, n in got["false_credit"].values()), got["false_credit"]


# Measured once per rule change, never tuned on. 2026-11-25: 85.3% of 662 held-out labels when a close
# similarity counted as correct (49% false credit on free text, issue 25). 2026-12-05, with `unverified`
# (closeness is no credit; a key fact beside an unbacked extra claim is unverified): 508 of 662 agree
# (76.7%: 103 answers are unverified, which is no agreement), 90.9% of the 559 verified ones; false
# credit ecostride 8/233 (3.4%), python-faq 1/176 (0.6%); real ecostride answers 183/193 (94.8%, as
# before the change: the 95% goal is not met on this half). These floors guard against regressions
# without tuning on the held-out half.
HELDOUT_VERIFIED_FLOOR = 0.90
ECOSTRIDE_REAL_FLOOR = 0.94


def test_heldout_agreement_floor():
    """Labels the rules never saw while they were written (issue 12: report this number, not the tuning one)."""
    got = _report("held-out", _score_by_corpus(_labelled("heldout.jsonl")))
    assert got["verified"] >= HELDOUT_VERIFIED_FLOOR
    assert got["ecostride_real"] >= ECOSTRIDE_REAL_FLOOR


def test_heldout_false_credit_per_corpus():
    """Issue 25: on labels the rules never saw, at most 5% of each corpus's hallucinations score correct."""
    rows = _score_by_corpus(_labelled("heldout.jsonl"))
    for corpus in sorted({r["corpus"] for r in rows}):
        k, n = false_credit([r for r in rows if r["corpus"] == corpus])
        assert n >= 100 and k <= FALSE_CREDIT_MAX * n, f"{corpus}: {k} of {n} hallucinations scored correct"
    # the similarity path gives no credit at all: closeness of topic is not correctness
    assert not any(r["outcome"] == "correct" and r["scoring_path"] == "similarity" and "cosine" in r["reason"]
                   for r in rows)


def test_false_credit_counts_only_hallucinations_scored_correct():
    rows = [{"label": "hallucinated", "outcome": o} for o in ("correct", "unverified", "hallucinated", "abstained")]
    rows += [{"label": "correct", "outcome": "correct"}, {"label": "unsupported", "outcome": "correct"}]
    assert false_credit(rows) == (2, 5)


def test_results_rows_carry_reason_and_scoring_path_per_slice():
    from assistant.evaluation.scoring import scoring_paths

    rows = [{"slice": "paraphrase", "scoring_path": "key_facts"}, {"slice": "paraphrase", "scoring_path": "similarity"},
            {"slice": "unanswerable", "scoring_path": "decline"}, {"slice": "paraphrase", "scoring_path": "key_facts"}]
    assert scoring_paths(rows) == {"paraphrase": {"key_facts": 2, "similarity": 1}, "unanswerable": {"decline": 1}}
