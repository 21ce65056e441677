"""`assistant questions`: generation mechanics with the tiny model, and every validation rule shown to
drop a bad item, against a real OpenAI-compatible server (FastAPI + uvicorn over loopback)."""

from __future__ import annotations

import csv
import json
import socket
import threading
import time
from pathlib import Path

import pytest
from fastapi import FastAPI, Request

from assistant.cli import main
from assistant.corpus.corpus import load_corpus, read_qa
from assistant.evaluation.questions import REASONS, first_question, leaks, parse_lines, parse_qa, run_questions
from tiny_model import TINY

# What the canned server answers, by a phrase of the prompt. Each bad item trips one rule.
QA_REPLIES = {
    "Return window": [
        {"question": "How long do I have to send a bike back?", "answer": "Within 21 days of delivery.",
         "key_fact": "21 days"},
        {"question": "Can I return a helmet?", "answer": "Within 10 days.", "key_fact": "10 days"},  # not in source
        {"question": "Is the return window 21 days?", "answer": "Yes.", "key_fact": "21 days"},  # states its answer
    ],
    "Refunds": [
        {"question": "When do I get my money after sending the bike back?", "answer": "Within 6 business days.",
         "key_fact": "6 business days"},
    ],
    "Tune-ups": [
        {"question": "What does the basic tune-up cost?", "answer": "It costs $45.", "key_fact": "$45"},
        # a fact of this section, asked about another one: retrieves "Opening hours", not "Tune-ups"
        {"question": "On which days is the workshop closed?", "answer": "$129.", "key_fact": "$129"},
    ],
}
REWORDINGS = {
    "How long do I have to send a bike back?": ["How many days do I have to return my bike?",
                                                "How long do I have to send the bike back?"],  # same once normalised
    "When do I get my money after sending the bike back?": ["How soon is a refund paid?",
                                                            "When will my refund arrive?"],
    "What does the basic tune-up cost?": ["How much is a basic tune-up?", "What is the price of the basic tune-up?"],
    # augmentation of the fixture's hand-written train questions
    "How long do I have to return a bike?": ["Until when can I send my bike back?",  # a test question: leak
                                             "Is it 21 days to return a bike?",  # states its answer
                                             "Which days is the workshop open?",  # asks something else
                                             "What is the deadline for bringing a bike back?"],
}
UNANSWERABLE = ["Do you sell electric scooters?", "How long do I have to return a bike?",  # the docs answer it
                "Can I rent a bike for a weekend trip?"]


def canned(prompt: str) -> str:
    if "Reply with JSON only" in prompt:
        for phrase, items in QA_REPLIES.items():
            if f'> {phrase}"' in prompt:
                return "Here you are:\n" + json.dumps(items)
        return "Sorry, I cannot help with that."  # unparsable
    if prompt.startswith("Rewrite this customer question"):
        q = prompt.split("Question: ", 1)[1].split("\n", 1)[0]
        return "\n".join(f"{i}. {w}" for i, w in enumerate(REWORDINGS.get(q, []), 1))
    if "do NOT answer" in prompt:
        return "\n".join(f"- {q}" for q in UNANSWERABLE)
    return ""


@pytest.fixture(scope="module")
def server():
    """A real OpenAI-compatible chat-completions server on a free loopback port."""
    import uvicorn

    app = FastAPI()
    calls: list[dict] = []

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        calls.append(body)
        text = canned(body["messages"][-1]["content"])
        return {"id": f"c{len(calls)}", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1", calls
    srv.should_exit = True
    thread.join(timeout=10)


def served_corpus(tiny_corpus_dir: Path, base_url: str) -> Path:
    with open(tiny_corpus_dir / "corpus.yaml", "a") as f:
        f.write(f"retrieval:\n  top_k: 1\ngenerator:\n  base_url: {base_url}\n  model: canned-7b\n"
                "  mode: passage\n  unanswerable: 3\n  top_k: 1\n  max_concurrency: 2\n")
    return tiny_corpus_dir


@pytest.mark.slow
def test_every_rule_drops_its_bad_item_and_the_rest_is_written(tiny_corpus_dir, server, capsys):
    base_url, calls = server
    root = served_corpus(tiny_corpus_dir, base_url)
    hand_written = (root / "qa.jsonl").read_text()
    assert main(["questions", str(root)]) == 0
    out = capsys.readouterr().out
    assert (root / "qa.jsonl").read_text() == hand_written  # never overwritten
    report = json.loads((Path(load_corpus(root).runs_dir) / "questions" / "report.json").read_text())
    for reason in REASONS[:-1]:  # the last, off_question, is augmentation's (tested below)
        assert report["dropped"].get(reason, 0) >= 1, (reason, report)
        assert reason in out
    items, problems = read_qa(root / "qa.generated.jsonl", {"docs/returns.md", "docs/service.md"})
    assert not problems
    questions = {q.question for q in items}
    assert "How long do I have to send a bike back?" in questions
    for bad in ("Can I return a helmet?", "Is the return window 21 days?", "On which days is the workshop closed?",
                "How long do I have to send the bike back?", "How long do I have to return a bike?"):
        assert bad not in questions
    assert {q.origin for q in items} == {"synthetic"} and {q.generator for q in items} == {"canned-7b"}
    assert {q.question for q in items if q.kind == "unanswerable"} == {"Do you sell electric scooters?",
                                                                        "Can I rent a bike for a weekend trip?"}
    # split by fact: a fact's wordings are train / test / val, or test only (the unseen slice)
    by_fact: dict[str, list[str]] = {}
    for q in items:
        if q.kind == "answerable":
            by_fact.setdefault(q.fact_id, []).append(q.split)
    assert any(s[:2] == ["train", "test"] for s in by_fact.values())
    assert any(set(s) == {"test"} for s in by_fact.values())
    kept = report["kept"]["answerable"] + report["kept"]["unanswerable"]
    assert report["kept_share"] == pytest.approx(kept / sum(report["generated"].values()), abs=1e-3)

    # deterministic and resumable: a second run asks the server nothing and writes the same file
    first, n_calls = (root / "qa.generated.jsonl").read_text(), len(calls)
    assert main(["questions", str(root)]) == 0
    assert len(calls) == n_calls and (root / "qa.generated.jsonl").read_text() == first

    # the review sheet goes back through `assistant import`
    sheet = root / "qa.generated.review.csv"
    rows = list(csv.DictReader(sheet.open()))
    assert len(rows) == len(items) and rows[0]["origin"] == "synthetic" and rows[0]["source_text"]
    out_dir = tiny_corpus_dir.parent / "reviewed"
    assert main(["import", str(sheet), str(out_dir), "--docs", str(root / "docs")]) == 0
    reviewed = load_corpus(out_dir).qa
    assert len(reviewed) == len(items)
    # the marks that say a row was generated, and by what, survive the review round trip
    assert {(q.origin, q.generator) for q in reviewed} == {(q.origin, q.generator) for q in items}


def test_a_folder_of_documents_alone_gets_qa_jsonl(tiny_corpus_dir, server):
    (tiny_corpus_dir / "qa.jsonl").unlink()
    root = served_corpus(tiny_corpus_dir, server[0])
    summary = run_questions(load_corpus(root))
    assert summary["written"] == str(root / "qa.jsonl")
    assert load_corpus(root).qa  # loads as the corpus's own QA set
    # a generated qa.jsonl is ours to replace on the next run
    assert run_questions(load_corpus(root))["written"] == str(root / "qa.jsonl")


def test_augment_adds_train_rewordings_and_guards_against_leaks(tiny_corpus_dir, server, capsys):
    root = served_corpus(tiny_corpus_dir, server[0])
    assert main(["questions", str(root), "--augment", "3", "--augment-only"]) == 0
    assert "set `qa_file: qa.augmented.jsonl`" in capsys.readouterr().out
    report = json.loads((Path(load_corpus(root).runs_dir) / "questions" / "report.json").read_text())
    items, problems = read_qa(root / "qa.augmented.jsonl")
    assert not problems
    new = [q for q in items if q.origin == "augmented"]
    assert [q.question for q in new] == ["What is the deadline for bringing a bike back?"]
    original = next(q for q in items if q.id == "ret-001-a")
    assert (new[0].fact_id, new[0].answer, new[0].key_facts, new[0].split) == \
        (original.fact_id, original.answer, original.key_facts, "train")
    assert report["dropped"] == {"answer_in_question": 1, "near_duplicate": 1, "off_question": 1}
    assert (root / "qa.jsonl").exists() and "aug" not in (root / "qa.jsonl").read_text()

    # with the similarity floor off, the off-topic rewording still fails: it retrieves the wrong document
    with open(root / "corpus.yaml", "a") as f:
        f.write("  reword_min_similarity: -1\n")  # inside the generator: section served_corpus wrote last
    summary = run_questions(load_corpus(root), augment_n=3, augment_only=True, out=str(root / "aug2.jsonl"))
    assert summary["dropped"] == {"answer_in_question": 1, "near_duplicate": 1, "not_retrieved": 1}

    # qa_file points the corpus (check, build, eval) at the augmented set
    with open(root / "corpus.yaml", "a") as f:
        f.write("qa_file: qa.augmented.jsonl\n")
    corpus = load_corpus(root)
    assert corpus.qa_path == root / "qa.augmented.jsonl"
    assert [q.id for q in corpus.questions("train") if q.origin == "augmented"] == [new[0].id]


@pytest.mark.slow
def test_generation_mechanics_with_the_tiny_model(tiny_corpus_dir, capsys):
    """The tiny random model writes noise: every item is dropped, counted, and the counts are stored;
    the generations are cached, so a rerun generates nothing new."""
    root = tiny_corpus_dir
    corpus = load_corpus(root)
    assert main(["questions", str(root)]) == 2
    err = capsys.readouterr().err
    assert "no question passed validation" in err and "dropped" in err
    runs = Path(corpus.runs_dir) / "questions"
    report = json.loads((runs / "report.json").read_text())
    assert report["generator"] == TINY and report["kept_share"] == 0
    assert sum(report["dropped"].values()) == sum(report["generated"].values()) > 0
    cached = (runs / "generations.jsonl").read_text()
    assert cached.count("\n") > 0
    assert main(["questions", str(root)]) == 2
    assert (runs / "generations.jsonl").read_text() == cached
    assert not (root / "qa.generated.jsonl").exists()


def test_parsers_read_json_lines_and_loose_replies():
    assert parse_qa('[{"question": "Q1?", "answer": "A", "key_fact": "21 days"}]')[0]["key_facts"] == ["21 days"]
    assert parse_qa("Q: How much?\nA: $45.\nFact: $45")[0] == {"question": "How much?", "answer": "$45.",
                                                                "key_facts": ["$45"]}
    assert parse_qa("no questions here") == []
    assert parse_lines('1. "How long is the window?"\n- Is it open on Monday?\nnot a question') == [
        "How long is the window?", "Is it open on Monday?"]
    assert first_question("Sure!\nWhat does it cost?\nHow long?") == "What does it cost?"


def test_leakage_guard_drops_held_out_repeats_of_train_questions(monkeypatch):
    import assistant.checks as checks

    qs = ["How long do I have to return a bike?", "How long do I have to return the bike?",
          "Which payment methods do you accept?", "How many days do I have to return a bike?"]
    assert leaks(qs[:3], ["train", "test", "test"], "all-MiniLM-L6-v2") == [False, True, False]
    monkeypatch.setattr(checks, "NEAR_DUPLICATE", 0.8)  # the embedding half of the rule
    assert leaks([qs[0], qs[3]], ["train", "val"], "all-MiniLM-L6-v2") == [False, True]


def test_origin_fields_leave_written_rows_and_their_fingerprints_alone(tmp_path):
    from assistant.corpus.corpus import QAItem
    from assistant.corpus.runs import RunPaths
    from assistant.evaluation.report import _augmented_training

    written = QAItem(id="a", question="How long?", answer="21 days", key_facts=["21 days"])
    assert "origin" not in written.model_dump_json() and "generator" not in written.model_dump_json()
    made = written.model_copy(update={"origin": "augmented", "generator": "canned-7b"})
    assert json.loads(made.model_dump_json())["origin"] == "augmented"
    (tmp_path / "sft").mkdir()
    (tmp_path / "sft" / "training_log.json").write_text(json.dumps({"augmented_train_examples": 12}))
    (tmp_path / "rag_sft").mkdir()
    (tmp_path / "rag_sft" / "training_log.json").write_text(json.dumps({"train_examples": 3}))
    assert _augmented_training(RunPaths(tmp_path)) == {"sft": 12, "rag_sft": 0}


def test_training_log_counts_augmented_rewordings(tiny_corpus_dir):
    from assistant.variants.sft import SftVariant

    with open(tiny_corpus_dir / "corpus.yaml", "a") as f:
        f.write("lora:\n  epochs: 1\n  batch_size: 4\n")
    qa = tiny_corpus_dir / "qa.jsonl"
    row = json.loads(qa.read_text().splitlines()[0])  # a train question
    row.update(id=row["id"] + "-aug1", question="What is the deadline for bringing a bike back?",
               origin="augmented", generator="canned-7b")
    with open(qa, "a") as f:
        f.write(json.dumps(row) + "\n")
    corpus = load_corpus(tiny_corpus_dir)
    SftVariant.build(corpus)
    log = json.loads((corpus.runs_dir / "sft" / "training_log.json").read_text())
    assert log["augmented_train_examples"] == 1
