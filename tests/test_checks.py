"""`assistant check`: structure errors and consistency checks, on the tiny fixture, on broken copies
of it, and on the bundled demo corpus."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from assistant import checks
from assistant.corpus.corpus import load_corpus

ROOT = Path(__file__).parent.parent
FIXTURES = Path(__file__).parent / "fixtures"
ECOSTRIDE = ROOT / "corpora" / "ecostride"


def edit_qa(corpus_dir: Path, line: int | None = None, **changes) -> None:
    """Change fields of the QA row on `line` (1-based), or append a new row when line is None."""
    path = corpus_dir / "qa.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    if line is None:
        rows.append(changes)
    else:
        rows[line - 1].update(changes)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def run_check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "assistant.cli", "check", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


# -- the tiny fixture and its broken copies -----------------------------------------------------
def test_tiny_fixture_is_consistent(tiny_corpus) -> None:
    found = checks.consistency(tiny_corpus)
    assert found.errors == [] and found.warnings == []
    assert checks.fact_counts(tiny_corpus) == {"facts": 4, "trained": 3, "test_only": 1}


def test_key_fact_missing_from_source_names_line_and_fact(tiny_corpus_dir: Path) -> None:
    edit_qa(tiny_corpus_dir, 4, key_facts=["$12.50"])
    edit_qa(tiny_corpus_dir, 7, source="docs/returns.md")  # "$45" lives in docs/service.md
    problems = checks.key_fact_problems(load_corpus(tiny_corpus_dir))
    assert [(Path(p.file).name, p.line) for p in problems] == [("qa.jsonl", 4), ("qa.jsonl", 7)]
    assert "'$12.50' not found in its source docs/returns.md" in problems[0].message
    assert "in no document" in problems[0].message
    assert "it is in docs/service.md: wrong source?" in problems[1].message


def test_key_fact_matches_after_normalisation(tiny_corpus_dir: Path) -> None:
    edit_qa(tiny_corpus_dir, 1, key_facts=["twenty-one days"])  # the document says "21 days"
    edit_qa(tiny_corpus_dir, 7, key_facts=["45 dollars"])  # the document says "$45"
    assert checks.key_fact_problems(load_corpus(tiny_corpus_dir)) == []


def test_test_wording_identical_to_train_wording_is_an_error(tiny_corpus_dir: Path) -> None:
    edit_qa(tiny_corpus_dir, 3, question="how long do I have to return a bike")  # line 1 is its train twin
    errors, _ = checks.duplicate_problems(load_corpus(tiny_corpus_dir))
    assert len(errors) == 1 and errors[0].line == 3
    assert "identical to the train question on line 1" in errors[0].message


def test_identical_wording_is_caught_whatever_the_line_order(tiny_corpus_dir: Path) -> None:
    for line in (2, 4, 6):  # val, then train, then test
        edit_qa(tiny_corpus_dir, line, question="What is the return window for bikes?")
    errors, warnings = checks.duplicate_problems(load_corpus(tiny_corpus_dir))
    assert [e.line for e in errors] == [6] and "train question on line 4" in errors[0].message
    assert [w.line for w in warnings] == [4]  # val and train share a wording: a warning only
    edit_qa(tiny_corpus_dir, 7, question="What does the cheapest tune-up cost?")  # train copy of test line 9
    errors, _ = checks.duplicate_problems(load_corpus(tiny_corpus_dir))
    assert [e.line for e in errors] == [6, 9]


def test_duplicate_within_a_split_is_a_warning(tiny_corpus_dir: Path) -> None:
    edit_qa(tiny_corpus_dir, 12, question="Which days is the workshop closed?")  # same as line 10, both test
    errors, warnings = checks.duplicate_problems(load_corpus(tiny_corpus_dir))
    assert errors == []
    assert [w.line for w in warnings] == [12] and "also on line 10" in warnings[0].message


def test_fact_id_with_two_kinds_is_an_error(tiny_corpus_dir: Path) -> None:
    edit_qa(tiny_corpus_dir, 13, fact_id="ret-001")
    errors, _ = checks.duplicate_problems(load_corpus(tiny_corpus_dir))
    assert len(errors) == 1 and "kinds ['answerable', 'unanswerable']" in errors[0].message


def test_near_duplicate_names_both_questions_and_lines(tiny_corpus_dir: Path) -> None:
    edit_qa(tiny_corpus_dir, 3, question="How long do I have to return my bike?")  # train line 1: "...a bike?"
    corpus = load_corpus(tiny_corpus_dir)
    errors, warnings = checks.near_duplicates(corpus, threshold=0.95)
    assert len(errors) == 1 and errors[0].line == 3 and warnings == []
    msg = errors[0].message
    assert "'How long do I have to return my bike?'" in msg and "'How long do I have to return a bike?'" in msg
    assert msg.endswith(f"about the same fact at {tiny_corpus_dir / 'qa.jsonl'}:1; reword one of them")
    assert checks.near_duplicates(corpus, threshold=0.999) == ([], [])  # the threshold is honoured


def test_near_duplicate_of_another_fact_is_a_warning(tiny_corpus_dir: Path) -> None:
    edit_qa(tiny_corpus_dir, 9, question="How much does the return shipping cost?")  # svc-001; line 4 is ret-002
    errors, warnings = checks.near_duplicates(load_corpus(tiny_corpus_dir), threshold=0.95)
    assert errors == [] and [w.line for w in warnings] == [9]
    assert "about another fact (ret-002)" in warnings[0].message


def test_unanswerable_answered_by_a_document_is_flagged(tiny_corpus_dir: Path, capsys) -> None:
    edit_qa(tiny_corpus_dir, None, id="una-003", question="How much is the Full Overhaul?", answer="",
            source="", fact_id="una-003", split="test", kind="unanswerable")
    warnings = checks.unanswerable_warnings(load_corpus(tiny_corpus_dir))
    assert len(warnings) == 1 and warnings[0].line == 15
    assert "key terms ['overhaul']" in warnings[0].message and "docs/service.md" in warnings[0].message
    # a warning to review: exit 0, unless --strict
    assert checks.check_corpus(tiny_corpus_dir, near_duplicate=None) == 0
    assert checks.check_corpus(tiny_corpus_dir, strict=True, near_duplicate=None) == 2
    out = capsys.readouterr().out
    assert f"warning: {tiny_corpus_dir / 'qa.jsonl'}:15: unanswerable question" in out


def test_missing_source_and_answer_without_its_fact_are_warnings(tiny_corpus_dir: Path) -> None:
    edit_qa(tiny_corpus_dir, 7, source="")
    edit_qa(tiny_corpus_dir, 4, answer="You pay for the return label.")
    warnings = checks.source_warnings(load_corpus(tiny_corpus_dir))
    assert [w.line for w in warnings] == [4, 7]
    assert "does not state key fact(s) ['$9.50']" in warnings[0].message
    assert "no source; docs/service.md contains its key facts" in warnings[1].message


def test_shared_suites_are_counted_and_validated(tiny_corpus_dir: Path, capsys) -> None:
    (tiny_corpus_dir / "general.jsonl").write_text(
        '{"id": "g1", "question": "What is the capital of France?", "answer": "Paris", "kind": "general"}\n'
        '{"id": "g2", "question": "What is 2 + 2?", "kind": "generic"}\n')
    with open(tiny_corpus_dir / "corpus.yaml", "a") as f:
        f.write("evaluation:\n  general_suite: general.jsonl\n  safety_suite: nowhere/safety.jsonl\n")
    assert checks.check_corpus(tiny_corpus_dir, near_duplicate=None) == 2
    out = capsys.readouterr().out
    assert f"error: {tiny_corpus_dir / 'general.jsonl'}:2: kind: input should be" in out
    assert "general (shared suite)" in out  # the valid line is counted
    assert "note: no safety suite at 'nowhere/safety.jsonl'" in out


def test_cli_exits_2_with_file_line_messages_on_consistency_errors(tiny_corpus_dir: Path) -> None:
    edit_qa(tiny_corpus_dir, 4, key_facts=["$12.50"])
    r = run_check(str(tiny_corpus_dir), "--near-duplicate", "0.99")
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"error: {tiny_corpus_dir / 'qa.jsonl'}:4: key fact '$12.50' not found" in r.stdout
    assert "1 error(s)" in r.stdout and "Traceback" not in r.stdout + r.stderr


def test_cli_names_every_malformed_line() -> None:
    r = run_check("tests/fixtures/malformed")
    out = r.stdout + r.stderr
    assert r.returncode == 2, out
    qa = "tests/fixtures/malformed/qa.jsonl"
    for expected in (f"{qa}:2: invalid JSON", f"{qa}:3: missing field 'question'",
                     f"{qa}:4: split: input should be 'train', 'val' or 'test', got 'dev'",
                     f"{qa}:5: source 'docs/pricing.md' is not a document of this corpus"):
        assert expected in out
    assert f"{qa}:1:" not in out  # the good line is not blamed
    assert "Traceback" not in out


# -- the bundled demo corpus --------------------------------------------------------------------
needs_ecostride = pytest.mark.skipif(not (ECOSTRIDE / "qa.jsonl").exists(),
                                     reason="corpora/ecostride/qa.jsonl is absent: the demo corpus is not in this checkout")


@pytest.fixture(scope="module")
def ecostride():
    return load_corpus(ECOSTRIDE)


@needs_ecostride
def test_ecostride_key_facts_are_in_their_sources(ecostride) -> None:
    problems = checks.key_fact_problems(ecostride)
    assert problems == [], "\n".join(map(str, problems))
    errors, _ = checks.duplicate_problems(ecostride)
    assert errors == [], "\n".join(map(str, errors))


@needs_ecostride
def test_ecostride_has_no_test_question_near_a_train_question(ecostride) -> None:
    errors, _ = checks.near_duplicates(ecostride, checks.NEAR_DUPLICATE)
    assert errors == [], "\n".join(map(str, errors))


@needs_ecostride
def test_ecostride_meets_the_issue_sizes(ecostride) -> None:
    """Issue 3: >= 25 documents and 8,000 words, >= 150 facts asked >= 3 ways, ~20% test-only, >= 40 unanswerable."""
    assert len(ecostride.documents) >= 25
    assert sum(len(d.text.split()) for d in ecostride.documents) >= 8000
    counts = checks.fact_counts(ecostride)
    assert counts["facts"] >= 150
    wordings: dict[str, int] = {}
    for q in ecostride.questions(kind="answerable"):
        wordings[q.fact_id] = wordings.get(q.fact_id, 0) + 1
    assert min(wordings.values()) >= 3, [f for f, n in wordings.items() if n < 3]
    assert 0.1 <= counts["test_only"] / counts["facts"] <= 0.3
    assert len(ecostride.questions(kind="unanswerable")) >= 40
    assert all(q.source for q in ecostride.questions(kind="answerable"))
