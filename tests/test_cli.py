import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


def run(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "assistant.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_every_verb_has_help():
    out = run("--help")
    assert out.returncode == 0
    for verb in ("compare", "build", "ask", "eval", "check", "app", "import", "retrieval"):
        assert verb in out.stdout
        assert run(verb, "--help").returncode == 0


def test_ask_json(tiny_corpus_dir):
    out = run("ask", str(tiny_corpus_dir), "--variant", "prompted", "How long can I return a bike?", "--json")
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert answer["variant"] == "prompted"
    assert answer["prompt_tokens"] > 10 and 0 < answer["completion_tokens"] <= 8
    assert answer["latency_s"] > 0


def test_user_errors_exit_2_without_traceback(tiny_corpus_dir, tmp_path):
    long_q = "x" * 1001
    out = run("ask", str(tiny_corpus_dir), long_q)
    assert out.returncode == 2 and "over the limit of 1000" in out.stderr and "Traceback" not in out.stderr
    out = run("ask", str(tmp_path / "nope"), "hi")
    assert out.returncode == 2 and "corpus folder not found" in out.stderr
    (tiny_corpus_dir / "corpus.yaml").write_text("name: tiny\nmodel:\n  name: /no/such/model\n")
    out = run("ask", str(tiny_corpus_dir), "hi")
    assert out.returncode == 2 and "cannot load model" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.smoke
def test_prompted_default_model_says_paris():
    out = run("ask", "corpora/ecostride", "--variant", "prompted", "What is the capital of France?")
    assert out.returncode == 0, out.stderr
    assert "Paris" in out.stdout
