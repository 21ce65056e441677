"""A fuzz pass over the corpus loaders: a corpus from an untrusted archive or repository.

Hypothesis writes hostile qa.jsonl files, corpus.yaml files and docs/ folders (named pipes, links
out of the corpus, folder links, images, binary and half-Markdown text included). Every outcome must
be a loaded corpus whose documents chunk quickly, or an AssistantError with exit code 2 whose every
line is one line naming a file of the corpus, within a time limit: no hang, no traceback, no file
read from outside the corpus. Derandomized, so a run is repeatable; sized to about a minute on two
busy cores.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assistant.corpus.chunking import chunk_documents, word_counter
from assistant.corpus.corpus import load_corpus
from assistant.errors import AssistantError
from tiny_model import copy_tiny_corpus

LIMIT_S = 10  # per example, on a loaded 2-core machine; an honest load takes milliseconds
SECRET = "outside-the-corpus-secret"
FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _corpus() -> tuple[tempfile.TemporaryDirectory, Path]:
    """A fresh copy of the tiny corpus (Hypothesis runs many examples in one test: no tmp_path)."""
    tmp = tempfile.TemporaryDirectory(prefix="untrusted-")
    root = Path(tmp.name) / "shop"
    copy_tiny_corpus(root)
    (Path(tmp.name) / "secret.txt").write_text(f"# Secret\n\n{SECRET}\n")
    return tmp, root


def _outcome(root: Path) -> str:
    """Load the corpus and check the contract; "ok" or "error"."""
    t0 = time.perf_counter()
    try:
        corpus = load_corpus(root)
    except AssistantError as e:
        assert e.exit_code == 2
        lines = e.lines()
        assert lines, "an error without a message"
        for line in lines:
            assert line.strip() and "\n" not in line and "Traceback" not in line, line
            assert line.startswith(str(root)), f"names no file of the corpus: {line}"
        assert time.perf_counter() - t0 < LIMIT_S
        return "error"
    for p in corpus.problems:  # warnings: one line, naming a file
        assert "\n" not in str(p) and str(p).startswith(str(root)), str(p)
    chunks = chunk_documents(corpus.documents, corpus.config.chunking, word_counter)
    assert not any(SECRET in d.text for d in corpus.documents)
    assert all(len(c.heading) <= 400 for c in chunks)
    assert time.perf_counter() - t0 < LIMIT_S
    return "ok"


# -- qa.jsonl ---------------------------------------------------------------------------------
FIELDS = ["id", "question", "answer", "key_facts", "source", "fact_id", "split", "kind", "origin", "generator"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12),
                    st.sampled_from(["train", "val", "test", "answerable", "unanswerable", "docs/returns.md",
                                     "synthetic", "", " "]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)
rows = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), values, max_size=9)
VALID = {"id": "q1", "question": "How long is the return window?", "answer": "21 days", "key_facts": ["21 days"],
         "source": "docs/returns.md", "split": "test", "kind": "answerable"}
qa_lines = st.one_of(
    rows.map(json.dumps),
    st.fixed_dictionaries({k: st.just(v) for k, v in VALID.items() if k != "id"},
                          optional={"id": st.text(max_size=4) | st.just("q1")}).map(json.dumps),
    st.text(max_size=60),
    st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
    st.integers(1, 3000).map(lambda n: "[" * n + "]" * n),  # nested past the JSON parser's stack
    st.just('{"id": "\\ud800", "question": "lone surrogate?"}'),
)


@FUZZ
@given(lines=st.lists(qa_lines, max_size=8), raw=st.binary(max_size=64), mode=st.sampled_from(["text", "raw", "bom"]))
def test_any_qa_jsonl_loads_or_is_one_line_per_problem(lines, raw, mode):
    tmp, root = _corpus()
    with tmp:
        text = "\n".join(lines).encode("utf-8", "surrogatepass")
        data = {"text": text, "raw": raw, "bom": b"\xef\xbb\xbf" + text}[mode]
        (root / "qa.jsonl").write_bytes(data)
        _outcome(root)


# -- corpus.yaml ------------------------------------------------------------------------------
SECTIONS = ["name", "description", "system_prompt", "model", "generation", "chunking", "retrieval", "lora",
            "verdict", "evaluation", "judge", "qa_file", "runs_dir", "ingest", "generator"]
KEYS = ["name", "device", "dtype", "chunk_tokens", "overlap_tokens", "top_k", "min_score", "max_new_tokens",
        "batch_size", "max_file_mb", "r", "epochs"]
yaml_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=False), st.text(max_size=10),
              st.sampled_from(["tiny-random", "cpu", "cuda:3", "/etc/evil", "../x", "qa.jsonl", "x.txt"])),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=5), inner,
                                                                max_size=3), max_leaves=8)
settings_docs = st.dictionaries(st.sampled_from(SECTIONS) | st.text(max_size=6), yaml_values, max_size=6).map(
    lambda d: yaml.safe_dump(d, allow_unicode=True))
yaml_chars = st.text(alphabet="&*!|>-:{}[]#'\"\n\t ab01%@`,?<=~", max_size=120)
LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join(['*' + p] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi"))


@pytest.mark.slow
@FUZZ
@given(doc=st.one_of(settings_docs, yaml_chars, st.just(LAUGHS), st.just("name: x\n<<: *missing\n"),
                     st.integers(1, 3000).map(lambda n: "a: " + "[" * n + "]" * n)),
       prefix=st.sampled_from(["", "name: shop\n", "\ufeff", "%YAML 1.1\n---\n"]))
def test_any_corpus_yaml_loads_or_is_one_line_per_problem(doc, prefix):
    tmp, root = _corpus()
    with tmp:
        (root / "corpus.yaml").write_text(prefix + doc, encoding="utf-8", errors="surrogatepass")
        if _outcome(root) == "ok":
            assert load_corpus(root).runs_dir.is_relative_to(Path(tmp.name))  # never out of bounds


# -- docs/ ------------------------------------------------------------------------------------
FRAGMENTS = ["# ", "## ", "###### ", "####### ", "```", "~~~", "\n", "\n\n", " ", "    ", "\t", "word", "Sentence. ",
             "===", "---", "<!--", "<h1>", "</h1>", "<p>", "</", "<script>", "\ufeff", "\x00", "|", "- ", "1. ",
             "#" * 40, " " * 300, "a" * 500, "\r", "\u2028", "\x0c", "![x](https://tracker.example/p.png)"]
markdownish = st.lists(st.sampled_from(FRAGMENTS), max_size=120).map("".join)
names = st.from_regex(r"[a-z0-9_-]{1,6}", fullmatch=True)
SUFFIXES = [".md", ".markdown", ".txt", ".html", ".htm", ".MD", ".png", ".csv", "", ".pdf", ".docx"]
entries = st.tuples(
    st.sampled_from(["file", "file", "file", "binary", "fifo", "link_out", "link_in", "link_dangling", "link_dir",
                     "link_loop", "subdir", "empty", "dir_out"]),
    names, st.sampled_from(SUFFIXES), markdownish, st.binary(max_size=300))


def _write_entry(root: Path, kind: str, name: str, suffix: str, text: str, data: bytes) -> None:
    docs = root / "docs"
    path = docs / (name + suffix)
    if path.exists() or path.is_symlink():
        return
    if kind == "file":
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
    elif kind == "binary":
        path.write_bytes(data)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "link_out":
        path.symlink_to(root.parent / "secret.txt")
    elif kind == "link_in":
        path.symlink_to(docs / "returns.md")
    elif kind == "link_dangling":
        path.symlink_to(docs / "nowhere.md")
    elif kind == "link_dir":
        path.symlink_to(root.parent, target_is_directory=True)
    elif kind == "link_loop":
        path.symlink_to(path)
    elif kind == "subdir":
        path.mkdir()
        (path / ("inner" + suffix)).write_text(text, encoding="utf-8", errors="surrogatepass")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "dir_out":  # docs/ itself a link out of the corpus
        shutil.rmtree(docs)
        docs.symlink_to(root.parent, target_is_directory=True)


@settings(FUZZ, max_examples=250)
@given(st.lists(entries, max_size=6), st.booleans())
def test_any_docs_folder_loads_or_is_one_line_per_problem(items, keep_originals):
    tmp, root = _corpus()
    with tmp:
        if not keep_originals:
            for p in (root / "docs").iterdir():
                p.unlink()
            (root / "qa.jsonl").write_text("")  # its sources would be missing documents
        for item in items:
            if (root / "docs").is_symlink():
                break
            _write_entry(root, *item)
        _outcome(root)


@pytest.mark.parametrize("text", [
    "# a" + " " * 30_000 + "b\n\nBody.",  # the cubic heading regex
    "# " + "word " * 40_000 + "\n\n" + "Text. " * 2_000,  # a 200 KB heading
    "<!--" * 50_000,  # quadratic in Python 3.11's html.parser
    "```\n" * 30_000 + "x\n" * 30_000,
])
@pytest.mark.parametrize("suffix", [".md", ".html"])
def test_hostile_documents_load_and_chunk_within_seconds(text, suffix):
    tmp, root = _corpus()
    with tmp:
        (root / "docs" / f"hostile{suffix}").write_text(text)
        assert _outcome(root) in ("ok", "error")
