"""Chunking, the FAISS index (persisted, reused, rebuilt, atomic), search, abstention and metrics.

Uses the tiny fixture corpus and the real bundled MiniLM embedder (loaded once per process).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from assistant.variants import retrieval
from assistant.corpus.chunking import chunk_documents, sections, word_counter
from assistant.config import ChunkSettings
from assistant.corpus.corpus import Document, load_corpus
from assistant.variants.retrieval import (Retriever, build_index, evaluate_retrieval, gold_rank,
                                 is_index_fresh, retrieval_metrics)
from assistant.variants.base import ABSTAIN_TEXT, NotBuilt, Source
from assistant.variants.rag import rag_messages


def set_yaml(corpus_dir: Path, text: str) -> None:
    with open(corpus_dir / "corpus.yaml", "a") as f:
        f.write(text)


# -- chunking ---------------------------------------------------------------------------------
GUIDE = """# Guide

Intro sentence one. Intro sentence two.

## Setup

### Details

""" + " ".join(f"Sentence {i} has exactly six words." for i in range(1, 13)) + """

```
# not a heading inside code
```

## Lists

- first item here
- second item here
"""


def test_sections_keep_heading_trails_and_ignore_code_fences():
    secs = sections(Document("docs/guide.md", GUIDE))
    assert [h for h, _ in secs] == ["Guide", "Guide > Setup > Details", "Guide > Lists"]
    assert any("# not a heading" in p for p in secs[1][1])
    # Without an H1 the document title (from the file name) leads the trail.
    assert sections(Document("docs/opening_hours.txt", "## Summer\n\nOpen late."))[0][0] == "Opening Hours > Summer"


# What the regex-based chunker (before markdown-it-py) made of these, byte for byte: the parser
# must not change the sections of ordinary documents (a changed section changes every index).
REPRESENTATIVE = {
    "docs/guide.md": ("# Guide #\n\nIntro. Two.\n\n## Setup ##\n\n### Details\ntext right under\n\n```python\n"
                      "# not a heading\n\nstill code\n```\n\n~~~\n## nor this\n~~~\n\n## Lists\n\n- one\n- two\n\n"
                      "| a | b |\n|---|---|\n| 1 | 2 |\n",
                      [("Guide", ["Intro. Two."]),
                       ("Guide > Setup > Details", ["text right under", "```python\n# not a heading\n\nstill code\n```",
                                                    "~~~\n## nor this\n~~~"]),
                       ("Guide > Lists", ["- one\n- two", "| a | b |\n|---|---|\n| 1 | 2 |"])]),
    "docs/no_title.txt": ("Preface line.\n\n## Summer\n\nOpen late.\n\n#### Deep\n\nDeeper.\n\n## Winter\nClosed.\n",
                          [("No Title", ["Preface line."]), ("No Title > Summer", ["Open late."]),
                           ("No Title > Summer > Deep", ["Deeper."]), ("No Title > Winter", ["Closed."])]),
    "docs/plain.md": ("No headings at all.\n\nSecond paragraph\nwith two lines.\n",
                      [("Plain", ["No headings at all.", "Second paragraph\nwith two lines."])]),
}


@pytest.mark.parametrize("path", sorted(REPRESENTATIVE))
def test_sections_of_ordinary_documents_are_unchanged_by_the_parser(path):
    text, expected = REPRESENTATIVE[path]
    assert sections(Document(path, text)) == expected


@pytest.mark.parametrize("window", [1, 2, 5])
def test_parsing_in_windows_equals_parsing_whole(window, monkeypatch):
    """The parser runs over windows of lines (bounded memory); any window size gives the same blocks."""
    from assistant.corpus import chunking

    texts = [t for t, _ in REPRESENTATIVE.values()] + [
        "a\nb\n===\n# h\n```\nx\n\n# no\n```\ntext\n", "```\nunclosed\n# no\n\nmore", "p1\np2\n---\n\n~~~\n~~~\n# y\nz"]
    whole = [chunking._markdown_blocks(t.splitlines()) for t in texts]
    monkeypatch.setattr(chunking, "PARSE_WINDOW", window)
    assert [chunking._markdown_blocks(t.splitlines()) for t in texts] == whole


@pytest.mark.parametrize("text", [
    "# a" + " " * 30_000 + "b\n\nbody.",  # 101 s with the old heading regex at 4,000 spaces
    "# " + "#" * 50_000 + " x\n\nbody.",
    "#\t" + "\t " * 30_000 + "x\n\nbody.",
    "```\n" * 20_000,
    "x\n" * 40_000 + "===\n",
])
def test_hostile_markdown_is_linear(text):
    import time

    t0 = time.perf_counter()
    chunks = chunk_documents([Document("docs/a.md", text)], ChunkSettings(), word_counter)
    assert time.perf_counter() - t0 < 5 and all(len(c.heading) <= 400 for c in chunks)


def test_long_headings_are_capped_in_the_trail():
    """Every chunk repeats its trail: a 200 KB heading once made a 143 MB chunks.jsonl."""
    from assistant.corpus.chunking import MAX_HEADING_CHARS, MAX_TRAIL_CHARS

    doc = "# " + "word " * 40_000 + "\n\n" + " ".join(f"Sentence {i} is here." for i in range(400))
    doc += "".join(f"\n\n{'#' * lv} {'deep ' * 100}\n\nText {lv}." for lv in range(2, 7))
    chunks = chunk_documents([Document("docs/a.md", doc)], ChunkSettings(), word_counter)
    assert len(chunks) > 10
    assert all(len(c.heading) <= MAX_TRAIL_CHARS for c in chunks)
    assert all(len(name) <= MAX_HEADING_CHARS for c in chunks for name in c.heading.split(" > "))
    assert chunks[0].heading.startswith("word word") and chunks[0].heading.endswith("…")
    assert sum(len(c.heading) + len(c.text) for c in chunks) < 40 * len(doc) // 100  # not a copy per chunk
    assert chunks[-1].heading.endswith("deep…")  # the deepest heading, cut: the trail gave way in the middle


def test_chunks_respect_size_and_overlap_whole_sentences():
    settings = ChunkSettings(chunk_tokens=20, overlap_tokens=8)
    chunks = chunk_documents([Document("docs/guide.md", GUIDE)], settings, word_counter)
    details = [c for c in chunks if c.heading == "Guide > Setup > Details"]
    assert len(details) >= 4
    assert [c.id for c in chunks] == list(range(len(chunks)))
    for a, b in zip(details, details[1:]):
        assert len(a.text.split()) <= 20 and len(b.text.split()) <= 20
        last = a.text.split(". ")[-1].rstrip(".")
        assert b.text.startswith(last), "the next chunk starts with the previous chunk's last sentence"
        assert b.text != a.text
    every = " ".join(c.text for c in details)
    assert all(f"Sentence {i} " in every for i in range(1, 13))  # nothing dropped
    lists = next(c for c in chunks if c.heading == "Guide > Lists")
    assert lists.text == "- first item here\n- second item here"
    assert lists.embedding_text().startswith("Guide > Lists\n")


def test_overlong_sentence_is_split_not_dropped():
    doc = Document("docs/x.md", "# X\n\n" + " ".join(f"w{i}" for i in range(50)) + ".")
    chunks = chunk_documents([doc], ChunkSettings(chunk_tokens=16, overlap_tokens=4), word_counter)
    assert len(chunks) == 4 and all(len(c.text.split()) <= 16 for c in chunks)
    assert " ".join(c.text for c in chunks).split()[-1] == "w49."


# -- index build, reuse, rebuild, atomicity ---------------------------------------------------
def test_build_reuse_and_rebuild_on_change(tiny_corpus_dir):
    corpus = load_corpus(tiny_corpus_dir)
    assert not is_index_fresh(corpus)
    report = build_index(corpus)
    for key in ("fingerprint", "build_time_s", "artifact_bytes", "peak_memory_mb", "chunks", "index_type"):
        assert key in report
    assert report["index_type"] == "flat" and report["chunks"] == 4
    assert report["environment"]["faiss"] and report["environment"]["embedder_device"] == "cpu"  # report card
    folder = corpus.runs.index
    assert {p.name for p in folder.iterdir()} == {"index.faiss", "chunks.jsonl", "manifest.json", "build.json"}
    mtime = (folder / "index.faiss").stat().st_mtime_ns

    again = build_index(load_corpus(tiny_corpus_dir))
    assert again["reused"] and (folder / "index.faiss").stat().st_mtime_ns == mtime

    # A new QA row does not touch the index; an edited document does.
    with open(tiny_corpus_dir / "qa.jsonl", "a") as f:
        f.write(json.dumps({"id": "new", "question": "Where is the warehouse?", "answer": "Lisbon",
                            "source": "docs/returns.md"}) + "\n")
    assert is_index_fresh(load_corpus(tiny_corpus_dir))
    doc = tiny_corpus_dir / "docs" / "service.md"
    doc.write_text(doc.read_text() + "\n## Gift vouchers\n\nGift vouchers are valid for 3 years.\n")
    edited = load_corpus(tiny_corpus_dir)
    assert not is_index_fresh(edited)
    with pytest.raises(NotBuilt, match="out of date.*assistant build"):
        Retriever.load(edited)
    rebuilt = build_index(edited)
    assert not rebuilt.get("reused") and rebuilt["chunks"] == 5
    top = Retriever.load(edited).search("How long is a gift voucher valid?")[0]
    assert top.heading == "Service plans > Gift vouchers" and "3 years" in top.text

    set_yaml(tiny_corpus_dir, "chunking:\n  chunk_tokens: 96\n")  # settings are part of the fingerprint
    assert not is_index_fresh(load_corpus(tiny_corpus_dir))


def test_incomplete_folders_are_not_built(tiny_corpus_dir, monkeypatch):
    corpus = load_corpus(tiny_corpus_dir)
    folder = corpus.runs.index
    # A crashed build's temp folder holding everything but the manifest does not count.
    leftover = folder.parent / ".rag.tmp-crashed"
    leftover.mkdir(parents=True)
    (leftover / "index.faiss").write_bytes(b"partial")
    assert not is_index_fresh(corpus)
    with pytest.raises(NotBuilt, match="not built.*assistant build"):
        Retriever.load(corpus)

    build_index(corpus)
    (folder / "manifest.json").unlink()
    assert not is_index_fresh(corpus)
    build_index(corpus)
    assert is_index_fresh(corpus)

    # A build that fails half way leaves the previous complete index in place and no temp folder.
    doc = tiny_corpus_dir / "docs" / "returns.md"
    doc.write_text(doc.read_text() + "\nExtra line.\n")
    edited = load_corpus(tiny_corpus_dir)
    before = (folder / "manifest.json").read_text()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("faiss.write_index", boom)
    with pytest.raises(OSError, match="disk full"):
        build_index(edited)
    assert (folder / "manifest.json").read_text() == before
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".rag.tmp-") and p != leftover]


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_indexes_build_and_search(tiny_corpus_dir, kind):
    set_yaml(tiny_corpus_dir, f"retrieval:\n  index: {kind}\n")
    corpus = load_corpus(tiny_corpus_dir)
    assert build_index(corpus)["index_type"] == kind
    hits = Retriever.load(corpus).search("How much is the Basic Tune-Up?")
    assert hits[0].path == "docs/service.md" and "$45" in hits[0].text


# -- search, metrics, the rag variant ---------------------------------------------------------
@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from tiny_model import copy_tiny_corpus

    root = tmp_path_factory.mktemp("built") / "tiny"
    copy_tiny_corpus(root, runs_dir=root.parent / "runs")
    corpus = load_corpus(root)
    build_index(corpus)
    return corpus


def test_search_ranks_the_right_passage(built):
    r = Retriever.load(built)
    assert Retriever.load(built) is r  # loaded once per process
    hits = r.search("Until when can I send my bike back?")
    assert [h.rank for h in hits] == [1, 2, 3]
    assert hits[0].path == "docs/returns.md" and "21 days" in hits[0].text
    assert hits[0].heading == "Returns > Return window"
    assert hits[0].score > hits[1].score >= hits[2].score
    qs = ["Which days is the workshop closed?", "How much is the Basic Tune-Up?"]
    many = r.search_many(qs, k=2)
    assert [len(m) for m in many] == [2, 2]
    assert [m[0].text for m in many] == [r.search(q)[0].text for q in qs]
    assert "Sundays" in many[0][0].text
    assert len(r.search("anything", k=50)) == len(r.chunks) == 4


def test_metrics_on_a_hand_made_example():
    gold = ["docs/a.md", "docs/b.md", "docs/c.md", ""]
    retrieved = [["docs/a.md", "docs/x.md", "docs/a.md"], ["docs/x.md", "docs/y.md", "docs/b.md"],
                 ["docs/x.md", "docs/y.md", "docs/z.md"], ["docs/a.md"]]
    assert gold_rank("docs/b.md", retrieved[1]) == 3 and gold_rank("docs/c.md", retrieved[2]) is None
    m3 = retrieval_metrics(gold, retrieved, k=3)
    assert m3["n"] == 3  # the question without a gold source is not counted
    assert m3["recall"] == pytest.approx(2 / 3) and m3["mrr"] == pytest.approx((1 + 1 / 3) / 3)
    m1 = retrieval_metrics(gold, retrieved, k=1)
    assert m1["recall"] == pytest.approx(1 / 3) and m1["mrr"] == pytest.approx(1 / 3)


def test_evaluate_retrieval_on_the_fixture(built, capsys):
    m = evaluate_retrieval(built, k=3, split="test")
    assert m["n"] == 6 and m["recall"] == 1.0 and m["mrr"] == 1.0
    assert {r["id"] for r in m["rows"]} >= {"ret-001-c", "svc-002-b"}
    retrieval.report_retrieval(built, k=1, split="all")
    assert "recall@1 =" in capsys.readouterr().out


def test_rag_messages_number_passages_and_keep_history():
    passages = [Source("docs/a.md", "A > Refunds", "Refunds take 6 days.", 0.8, 1),
                Source("docs/b.md", "", "Closed on Mondays.", 0.5, 2)]
    msgs = rag_messages("You are Pedalo's assistant.", "How long do refunds take?", passages,
                        history=[("hi", "Hello!")])
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert msgs[0]["content"] == "You are Pedalo's assistant."
    user = msgs[-1]["content"]
    assert "[1] A > Refunds: Refunds take 6 days." in user and "[2] Closed on Mondays." in user
    assert "I don't know." in user and "[1]" in user and user.endswith("Question: How long do refunds take?")


def test_rag_variant_batches_retrieval_and_abstains_below_threshold(built, monkeypatch):
    from assistant.variants import load_variant

    rag = load_variant("rag", built)
    prompt = rag.prompt("How much does return shipping cost?")
    assert "$9.50" in prompt.messages[-1]["content"] and prompt.sources[0].path == "docs/returns.md"
    # answer_many retrieves for all questions in one batch, never one by one.
    monkeypatch.setattr(rag.retriever, "search", lambda *a, **k: pytest.fail("per-question search"))
    rag.settings = rag.settings.model_copy(update={"min_score": 0.5})
    answers = rag.answer_many(["Until when can I send my bike back?", "Do you sell electric scooters?"])
    assert not answers[0].abstained_before_generation and answers[0].prompt_tokens > 0
    assert answers[1].abstained_before_generation and answers[1].text == ABSTAIN_TEXT
    assert answers[1].sources and answers[1].sources[0].score < 0.5  # shown, though too weak to use
    assert answers[1].latency_s > 0
    # no_context: below the threshold the model answers alone, with no passages in its prompt.
    rag.settings = rag.settings.model_copy(update={"below_min_score": "no_context"})
    weak = rag.prompts_many(["Do you sell electric scooters?"])[0]
    assert weak.messages[-1]["content"] == "Do you sell electric scooters?" and weak.sources


def test_ask_cli_prints_passages(built, capsys):
    from assistant.cli import main

    assert main(["ask", str(built.root), "--variant", "rag", "What is the price of a basic tune-up?"]) == 0
    out = capsys.readouterr().out
    assert "[1] docs/service.md > Service plans > Tune-ups  (score 0." in out


def test_ask_unbuilt_rag_names_the_build_command(tiny_corpus_dir, capsys):
    from assistant.cli import main

    assert main(["ask", str(tiny_corpus_dir), "--variant", "rag", "hi"]) == 2
    assert f"assistant build {tiny_corpus_dir} --variant rag" in capsys.readouterr().err


@pytest.mark.parametrize("script", ["cjk", "no_spaces", "huge_line"])
def test_chunks_have_a_hard_size_cap_whatever_the_script(script):
    import time

    from assistant.corpus.chunking import chunk_documents, max_chars, token_counter
    from assistant.config import ChunkSettings
    from assistant.corpus.corpus import Document
    from assistant.model.loading import load_tokenizer, resolve_embedder

    tok = load_tokenizer(resolve_embedder("all-MiniLM-L6-v2"))
    count = token_counter(tok)
    text = {"cjk": "退货政策。自行车在交付后二十一天内可以退货，需要保留原始包装和收据。" * 300,
            "no_spaces": "abcdefghij0123456789" * 2000,
            "huge_line": ("word " * 9 + "x" * 40 + " ") * 12_000}[script]  # 1 MB on one line
    settings = ChunkSettings(chunk_tokens=64, overlap_tokens=16)
    t0 = time.perf_counter()
    chunks = chunk_documents([Document("docs/a.md", text)], settings, count)
    assert time.perf_counter() - t0 < 120
    assert len(chunks) > 10
    sizes = count([c.text for c in chunks])
    assert max(sizes) <= 64 and max(len(c.text) for c in chunks) <= max_chars(64)
    if script == "cjk":  # cut by characters: nothing lost, no spaces inserted
        assert "".join(c.text for c in chunks[:1]) in text and " " not in chunks[0].text


def test_prompts_never_exceed_the_model_context(built, monkeypatch):
    from assistant.variants import Source, load_variant

    rag = load_variant("rag", built)
    prompted = load_variant("prompted", built, rag.engine)
    for v in (rag, prompted):
        monkeypatch.setattr(v, "context_tokens", lambda: 300)
    budget = 300 - rag.engine.max_new_tokens
    passages = [Source("docs/returns.md", "Returns", "Bikes can be returned within 21 days. " * 8, 0.9, i)
                for i in range(1, 11)]
    history = [("An earlier question " * 10, "An earlier answer " * 10)] * 3
    p = rag.prompt_from("How long?", passages, history)
    assert rag.engine.count_tokens(rag.engine.render(p.messages)) <= budget
    assert 1 <= len(p.sources) < len(passages)  # the shown passages only: citations point into them
    assert p.messages[-1]["content"].endswith("Question: How long?") and len(p.messages) == 2  # history went first
    q = prompted.prompt("How long?", history)
    assert prompted.engine.count_tokens(prompted.engine.render(q.messages)) <= budget
    assert q.messages[-1]["content"] == "How long?"
