"""The runs/ layout has one home (corpus/runs.py), and the other shared helpers behave as their callers expect."""

from __future__ import annotations

import ast
from pathlib import Path

from assistant.corpus.runs import RunPaths
from assistant.model.remote import openai_client
from assistant.runtime import peak_memory_mb
from assistant.text import common_terms, key_terms

PACKAGE = Path(__file__).resolve().parents[1] / "assistant"
HOME = PACKAGE / "corpus" / "runs.py"
# File names of runs/ artifacts: spelled only in corpus/runs.py.
ARTIFACT_NAMES = {"labels.jsonl", "votes.jsonl", "training_log.json", "build.json", "chunks.jsonl", "index.faiss",
                  "manifest.json", "app-evaluation.log"}


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def runs_paths_spelled_out(path: Path) -> list[str]:
    """`x.runs_dir / ...` expressions and artifact file names in a module's code (docstrings aside)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.left, ast.Attribute)
                and node.left.attr == "runs_dir"):
            found.append(f"{path.name}:{node.lineno}: runs_dir / ...")
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs
              and node.value in ARTIFACT_NAMES):
            found.append(f"{path.name}:{node.lineno}: {node.value!r}")
    return found


def test_every_module_asks_run_paths_where_an_artifact_lives():
    found = [f for p in sorted(PACKAGE.rglob("*.py")) if p != HOME for f in runs_paths_spelled_out(p)]
    assert not found, "runs/ paths spelled out outside corpus/runs.py (ask corpus.runs):\n" + "\n".join(found)


def test_the_check_finds_a_spelled_out_path(tmp_path):
    module = tmp_path / "m.py"
    module.write_text('"""Writes labels.jsonl."""\n\ndef f(corpus):\n    return corpus.runs_dir / "x" / "votes.jsonl"\n')
    assert runs_paths_spelled_out(module) == ["m.py:4: runs_dir / ...", "m.py:4: 'votes.jsonl'"]


def test_run_paths_are_distinct_and_under_the_root(tmp_path):
    runs = RunPaths(tmp_path / "runs")
    paths = [runs.lock, runs.index, runs.chunks, runs.evals, runs.latest_eval, runs.eval_cache, runs.app_eval_log,
             runs.score_cache, runs.questions, runs.labels, runs.votes, runs.answer_cache("rag", "ab12"),
             runs.support_cache("cd34"), *(f(v) for v in ("sft", "rag_sft") for f in
                                           (runs.variant, runs.adapter, runs.checkpoints, runs.training_log,
                                            runs.build_report))]
    assert len(set(paths)) == len(paths)
    assert all(p.is_relative_to(runs.root) for p in paths)
    assert runs.index == runs.variant("rag") and runs.build_report("rag") == runs.index / "build.json"
    assert runs.swapped_artifacts() == (runs.index, runs.adapter("sft"), runs.adapter("rag_sft"))


def test_corpus_runs_follows_runs_dir(tiny_corpus):
    assert tiny_corpus.runs.root == tiny_corpus.runs_dir
    assert tiny_corpus.runs.labels == tiny_corpus.runs_dir / "labels.jsonl"


def test_key_terms_leave_out_stop_words_question_frames_and_common_words():
    docs = [{"return", "window", "bike"}, {"return", "shipping"}, {"return", "helmet"}]  # in tokens form
    common = common_terms(docs)
    assert common == {"return"}
    assert key_terms("Can you tell me about the returns window for a bike?", common) == {"window", "bike"}
    assert common_terms(docs[:2]) == set()  # two documents: nothing is common yet


def test_openai_client_reads_its_key_from_the_named_variable(monkeypatch):
    monkeypatch.setenv("TEST_JUDGE_KEY", "sk-test")
    client = openai_client("http://127.0.0.1:9/v1", "TEST_JUDGE_KEY", 5.0, 1)
    assert client.api_key == "sk-test" and str(client.base_url).startswith("http://127.0.0.1:9/v1")
    assert client.max_retries == 1 and client.timeout == 5.0
    monkeypatch.delenv("TEST_JUDGE_KEY")
    assert openai_client("http://127.0.0.1:9/v1", "TEST_JUDGE_KEY", 5.0, 1).api_key == "not-needed"
    assert openai_client("http://127.0.0.1:9/v1", None, 5.0, 1).api_key == "not-needed"


def test_peak_memory_is_the_process_high_water_mark():
    first = peak_memory_mb()
    ballast = bytearray(64 * 2**20)  # touch 64 MB
    ballast[::4096] = b"x" * len(ballast[::4096])
    assert first > 0 and peak_memory_mb() >= first
    del ballast


def test_an_answering_process_hands_freed_buffers_back_at_once(tmp_path):
    """glibc serves 8 MB buffers from its heap once one such mapped buffer was freed, and freed ones
    between live ones stay resident there; after map_large_buffers() each is its own mapping, gone
    from the resident set as soon as it is freed (an evaluation worker's KV buffers and logits)."""
    import os
    import subprocess
    import sys

    from assistant.runtime import _glibc

    if _glibc() is None or not os.path.exists("/proc/self/statm"):
        pytest.skip("glibc's allocator on Linux only")
    script = tmp_path / "holes.py"
    script.write_text(
        "import sys, torch\n"
        "from assistant.runtime import map_large_buffers\n"
        "def rss():\n"
        "    return int(open('/proc/self/statm').read().split()[1]) * 4096 / 2**20\n"
        "if sys.argv[1] == 'mapped':\n"
        "    map_large_buffers()\n"
        "first = torch.ones(2 << 20)  # 8 MB, mapped; freeing it raises glibc's threshold\n"
        "del first\n"
        "buffers = [torch.ones(2 << 20) for _ in range(40)]\n"
        "before = rss()\n"
        "del buffers[::2]  # holes between live buffers\n"
        "print(before - rss())\n")
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    freed = {mode: float(subprocess.run([sys.executable, str(script), mode], env=env, capture_output=True,
                                        text=True, check=True).stdout) for mode in ("default", "mapped")}
    assert freed["mapped"] > 150 and freed["default"] < 50, freed  # 20 buffers of 8 MB: 160 MB
