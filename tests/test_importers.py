"""`assistant import`: SQuAD JSON and CSV/JSONL FAQs become corpora that `assistant check` accepts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from assistant.cli import main
from assistant.corpus.corpus import load_corpus
from assistant.corpus.importers import UNANSWERED, assign_splits

ROOT = Path(__file__).parent.parent
IMPORT = Path(__file__).parent / "fixtures" / "import"


def check_cli(corpus: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "assistant.cli", "check", str(corpus)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def qa_rows(corpus: Path) -> list[dict]:
    return [json.loads(x) for x in (corpus / "qa.jsonl").read_text().splitlines()]


def test_squad_import_makes_a_corpus_that_check_accepts(tmp_path: Path) -> None:
    out = tmp_path / "ferry"
    assert main(["import", str(IMPORT / "squad.json"), str(out)]) == 0
    corpus = load_corpus(out)
    assert sorted(d.path for d in corpus.documents) == ["docs/harrowgate-ferry.md", "docs/kittering-lighthouse.md"]
    assert corpus.document("docs/harrowgate-ferry.md").text.startswith("# Harrowgate Ferry\n\nThe Harrowgate Ferry")
    rows = {r["id"]: r for r in qa_rows(out)}
    assert rows["hf-2"] | {"split": None} == {
        "id": "hf-2", "question": "How long is the crossing of the Vell estuary?", "answer": "twenty-five minutes",
        "key_facts": ["twenty-five minutes"], "source": "docs/harrowgate-ferry.md", "fact_id": "hf-2",
        "split": None, "kind": "answerable"}
    assert {i for i, r in rows.items() if r["kind"] == "unanswerable"} == {"hf-5", "hf-9", "kl-5"}
    assert rows["hf-5"]["answer"] == UNANSWERED and rows["hf-5"]["key_facts"] == []
    assert {r["split"] for r in rows.values()} == {"train", "val", "test"}

    r = check_cli(out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok:" in r.stdout and "14 questions, 11 answerable facts" in r.stdout


def test_csv_faq_import_resolves_sources_and_keeps_facts_together(tmp_path: Path) -> None:
    out = tmp_path / "tea"
    assert main(["import", str(IMPORT / "faq.csv"), str(out), "--docs", str(IMPORT / "faq_docs"), "--name", "brightleaf"]) == 0
    corpus = load_corpus(out)
    assert corpus.name == "brightleaf"
    assert sorted(d.path for d in corpus.documents) == ["docs/delivery.md", "docs/subscriptions.txt", "docs/teas.md"]
    rows = qa_rows(out)
    assert [r["source"] for r in rows] == ["docs/delivery.md"] * 5 + ["docs/teas.md"] * 4 + ["docs/subscriptions.txt"] * 3
    morning = rows[5]
    assert morning["answer"] == "Brew Morning Ember at 95 °C,\nfor four minutes."  # a quoted multi-line field
    assert morning["key_facts"] == ["95 °C", "4 minutes"]
    assert rows[0]["fact_id"] == rows[1]["fact_id"] == "del-1" and rows[0]["split"] == rows[1]["split"]

    r = check_cli(out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 error(s), 0 warning(s)" in r.stdout


def test_minimal_csv_gets_ids_sources_and_deterministic_splits(tmp_path: Path) -> None:
    args = [str(IMPORT / "faq_noids.csv"), "--docs", str(IMPORT / "faq_docs")]
    assert main(["import", args[0], str(tmp_path / "a"), *args[1:]]) == 0
    assert main(["import", args[0], str(tmp_path / "b"), *args[1:]]) == 0
    rows = qa_rows(tmp_path / "a")
    assert rows == qa_rows(tmp_path / "b")
    assert [r["id"] for r in rows] == ["q00001", "q00002", "q00003"]
    assert [r["source"] for r in rows] == ["docs/delivery.md", "docs/delivery.md", "docs/teas.md"]
    assert sorted(r["split"] for r in rows) == ["test", "train", "train"]


def test_jsonl_import_keeps_given_splits_and_kinds(tmp_path: Path) -> None:
    src = tmp_path / "qa.jsonl"
    src.write_text(
        '{"question": "What does express delivery cost?", "answer": "$8.50", "key_facts": ["$8.50"], "split": "test"}\n'
        '{"question": "Do you sell teapots?", "kind": "unanswerable", "split": "test"}\n'
        '{"question": "Where is Quiet Hill grown?", "answer": "Shizuoka", "key_facts": "Shizuoka", "split": "train"}\n')
    assert main(["import", str(src), str(tmp_path / "out"), "--docs", str(IMPORT / "faq_docs")]) == 0
    rows = qa_rows(tmp_path / "out")
    assert [(r["split"], r["kind"], r["source"]) for r in rows] == [
        ("test", "answerable", "docs/delivery.md"), ("test", "unanswerable", ""), ("train", "answerable", "docs/teas.md")]
    assert rows[1]["answer"] == UNANSWERED and rows[2]["key_facts"] == ["Shizuoka"]


def test_the_unanswerable_reference_is_the_variants_abstention() -> None:
    from assistant.variants.base import ABSTAIN_TEXT

    assert UNANSWERED == ABSTAIN_TEXT


def test_splits_group_facts_and_questions_and_hit_the_fractions() -> None:
    rows = [{"question": f"question {i}?", "fact_id": f"f{i // 2}", "split": "", "kind": "answerable"} for i in range(40)]
    rows.append({"question": "question 0?", "fact_id": "other", "split": "", "kind": "answerable"})  # same text as row 0
    assign_splits(rows, test_fraction=0.2, val_fraction=0.1)
    by_fact: dict[str, set[str]] = {}
    for r in rows:
        by_fact.setdefault(r["fact_id"], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_fact.values())  # a fact never straddles splits
    assert rows[-1]["split"] == rows[0]["split"]  # nor does an identical question
    facts = {f: s.pop() for f, s in by_fact.items() if f != "other"}
    assert sorted(facts.values()).count("test") == 4 and sorted(facts.values()).count("val") == 2  # of 20 groups


# -- refusals and bad input: one line naming file and line, exit 2, nothing written ---------------
def test_refuses_to_overwrite_without_force(tmp_path: Path, capsys) -> None:
    out = tmp_path / "ferry"
    assert main(["import", str(IMPORT / "squad.json"), str(out)]) == 0
    (out / "docs" / "extra.md").write_text("# Old\n\nleft from before\n")
    assert main(["import", str(IMPORT / "squad.json"), str(out)]) == 2
    assert f"error: {out}:1: already exists; pass --force" in capsys.readouterr().err
    assert (out / "docs" / "extra.md").exists()
    assert main(["import", str(IMPORT / "squad.json"), str(out), "--force"]) == 0
    assert not (out / "docs" / "extra.md").exists()
    # no temporary folders left behind (the lock file stays: removing one is racy)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ferry.lock", "ferry"]


def test_force_never_replaces_a_folder_that_is_not_a_corpus_or_holds_the_input(tmp_path: Path, capsys) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    assert main(["import", str(IMPORT / "squad.json"), str(precious), "--force"]) == 2
    assert "is not a corpus folder" in capsys.readouterr().err
    corpus = tmp_path / "c"
    assert main(["import", str(IMPORT / "squad.json"), str(corpus)]) == 0
    src = corpus / "squad.json"
    src.write_text((IMPORT / "squad.json").read_text())
    assert main(["import", str(src), str(corpus), "--force"]) == 2
    assert "replacing it would delete the input" in capsys.readouterr().err
    assert (precious / "notes.txt").read_text() == "keep me" and src.exists()


@pytest.mark.parametrize("name, text, expected", [
    ("faq.csv", "question,reply\nWhat?,This.\n", ":1: missing column(s) answer; the header is ['question', 'reply']"),
    ("faq.csv", 'question,answer\nHow long?,"3 days\nWhen?,Now\n', ":2: malformed CSV (unexpected end of data) in the row starting here"),
    ("faq.csv", "question,answer,source\nHow long?,3 to 5 business days,shipping.md\n",
     ":2: source 'shipping.md' is not a document in"),
    ("faq.csv", "question,answer\nHow long?,\n", ":2: answer is empty; fill it, or set kind to 'unanswerable'"),
    ("qa.jsonl", '{"question": "How long?", "answer": "3 days"}\n{"question": "When?" "answer": 1}\n',
     ":2: invalid JSON (Expecting ',' delimiter at column 22)"),
    ("qa.jsonl", '{"question": "How long?", "answer": "3 days", "split": "dev"}\n', ":1: split 'dev' is not one of"),
    ("squad.json", '{"data": [\n  {"title": "X", "paragraphs": [}\n]}', ":2: invalid JSON (Expecting value at column 33)"),
    ("squad.json", '{"data": [{"title": "X", "paragraphs": [{"qas": []}]}]}', ":1: data[0].paragraphs[0]: missing 'context' text"),
])
def test_bad_input_is_one_line_with_file_and_line(tmp_path: Path, capsys, name: str, text: str, expected: str) -> None:
    src = tmp_path / name
    src.write_text(text)
    out = tmp_path / "out"
    assert main(["import", str(src), str(out), "--docs", str(IMPORT / "faq_docs")]) == 2
    err = capsys.readouterr().err
    assert f"error: {src}{expected}" in err, err
    assert "Traceback" not in err and not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_non_utf8_and_non_squad_json_are_refused(tmp_path: Path, capsys) -> None:
    latin = tmp_path / "faq.csv"
    latin.write_bytes("question,answer\nHow long?,3 days\nWhere?,Caf\u00e9 Noir\n".encode("latin-1"))
    assert main(["import", str(latin), str(tmp_path / "out"), "--docs", str(IMPORT / "faq_docs")]) == 2
    assert f"error: {latin}:3: not UTF-8 (byte" in capsys.readouterr().err
    rows = tmp_path / "rows.json"
    rows.write_text('[{"question": "How long?", "answer": "3 days"}]')
    assert main(["import", str(rows), str(tmp_path / "out")]) == 2
    assert "must be SQuAD format" in capsys.readouterr().err


def test_qa_file_without_docs_folder_is_refused(tmp_path: Path, capsys) -> None:
    assert main(["import", str(IMPORT / "faq.csv"), str(tmp_path / "out")]) == 2
    assert "need --docs DIR" in capsys.readouterr().err
