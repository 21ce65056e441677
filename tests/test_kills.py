"""kill -9 at random points and two processes at once: nothing lost, nothing half-written looks done.

Each test runs the real CLI in a subprocess (as a user would), kills it with SIGKILL after a delay
drawn from a seeded generator, checks what is on disk, then reruns and compares with a clean run.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from assistant.variants import training
from assistant.cli import main
from assistant.corpus.corpus import load_corpus

ROOT = Path(__file__).parent.parent
IMPORT = Path(__file__).parent / "fixtures" / "import"
SEEDS = (0, 1, 2)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "assistant.cli", *args], cwd=ROOT, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def timed(*args: str) -> float:
    t0 = time.perf_counter()
    p = cli(*args)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err.decode()[-2000:]
    return time.perf_counter() - t0


def kill_after(proc: subprocess.Popen, delay: float) -> bool:
    """SIGKILL `proc` after `delay` seconds; False when it finished first."""
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return True


def tree(folder: Path, skip=(".lock",)) -> dict[str, str]:
    """Relative path -> sha256 of every visible file (dot-files and folders are temporary)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if p.is_file() and not any(part.startswith(".") for part in rel.parts) and not p.name.endswith(skip):
            out[str(rel)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def configure(corpus_dir: Path, epochs: int = 4) -> None:
    with open(corpus_dir / "corpus.yaml", "a") as f:
        f.write(f"lora:\n  epochs: {epochs}\n  batch_size: 1\n  learning_rate: 0.001\n  eval_steps: 3\n")


def adapter_is_whole(corpus, variant: str = "sft") -> bool:
    from safetensors.torch import load_file

    folder = training.adapter_dir(corpus, variant)
    load_file(str(folder / "adapter_model.safetensors"))  # raises on a truncated file
    return json.loads((folder / "adapter_config.json").read_text())["peft_type"] == "LORA"


# -- two processes at once --------------------------------------------------------------------
def test_a_second_build_or_evaluation_of_the_same_corpus_is_refused_while_one_builds(tiny_corpus_dir, capsys):
    import assistant.variants.build  # noqa: F401  (imported before the race, not during it)
    import assistant.evaluation.runner  # noqa: F401

    configure(tiny_corpus_dir, epochs=40)
    corpus = load_corpus(tiny_corpus_dir)
    first = cli("build", str(tiny_corpus_dir), "--variant", "sft")
    try:
        deadline = time.time() + 120
        while not list((corpus.runs_dir / "sft" / "checkpoints").glob("checkpoint-*")):
            assert first.poll() is None, first.stderr.read().decode()
            assert time.time() < deadline
            time.sleep(0.05)
        assert main(["build", str(tiny_corpus_dir), "--variant", "sft"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: locked: another process is building or evaluating corpus 'tiny'"), err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert main(["eval", str(tiny_corpus_dir), "--variants", "prompted", "--limit", "1"]) == 2
        assert "locked" in capsys.readouterr().err
        _, err = first.communicate(timeout=300)
        assert first.returncode == 0, err.decode()[-2000:]
    finally:
        if first.poll() is None:
            first.kill()
    assert training.is_trained(corpus, "sft") and adapter_is_whole(corpus)
    assert main(["build", str(tiny_corpus_dir), "--variant", "sft"]) == 0  # the lock is free again


def test_two_evaluations_at_the_same_second_write_separate_folders(tiny_corpus):
    from assistant.evaluation import report

    metrics_like = {"corpus": "tiny"}
    folders = set()
    import threading

    def write(i):  # the report folder logic only: the plots and markdown are exercised elsewhere
        folders.add(report.atomic_new_dir(tiny_corpus.runs_dir / "eval", "20250101-000000",
                                          lambda tmp: (tmp / "metrics.json").write_text(json.dumps(metrics_like))))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(folders) == 6 and all((f / "metrics.json").exists() for f in folders)
    assert not [p for p in (tiny_corpus.runs_dir / "eval").iterdir() if p.name.startswith(".")]


# -- kill -9 ----------------------------------------------------------------------------------
def test_killed_forced_rebuild_keeps_the_good_adapter_and_a_rerun_completes(tiny_corpus_dir):
    configure(tiny_corpus_dir)
    corpus = load_corpus(tiny_corpus_dir)
    duration = timed("build", str(tiny_corpus_dir), "--variant", "sft")
    good = tree(corpus.runs_dir / "sft" / "adapter")
    for seed in SEEDS:
        delay = random.Random(seed).uniform(0.3, 1.0) * duration
        killed = kill_after(cli("build", str(tiny_corpus_dir), "--variant", "sft", "--force"), delay)
        # Killed or not, a built adapter is there, whole, and counts as built.
        assert training.is_trained(corpus, "sft") and adapter_is_whole(corpus), f"seed {seed}, {delay:.1f} s"
        if killed:
            now = tree(corpus.runs_dir / "sft" / "adapter")
            assert now == good or set(now) == set(good)  # the old adapter, or a complete new one
    assert main(["build", str(tiny_corpus_dir), "--variant", "sft", "--force"]) == 0
    # Training is seeded: the rerun's weights are the clean run's, byte for byte (the config's
    # target_modules list follows set order, which varies between processes).
    assert tree(corpus.runs_dir / "sft" / "adapter")["adapter_model.safetensors"] == good["adapter_model.safetensors"]
    assert not list((corpus.runs_dir / "sft").glob(".adapter.*"))


def test_killed_index_build_never_looks_built_and_a_rerun_matches_a_clean_one(tiny_corpus_dir):
    corpus = load_corpus(tiny_corpus_dir)
    duration = timed("build", str(tiny_corpus_dir), "--variant", "rag")
    clean = tree(corpus.runs_dir / "rag")
    shutil.rmtree(corpus.runs_dir / "rag")
    from assistant.variants.retrieval import is_index_fresh

    for seed in SEEDS:
        kill_after(cli("build", str(tiny_corpus_dir), "--variant", "rag", "--force"),
                   random.Random(seed).uniform(0.2, 1.0) * duration)
        if is_index_fresh(corpus):  # complete, or not there at all
            assert {k for k in tree(corpus.runs_dir / "rag") if k != "build.json"} == \
                   {k for k in clean if k != "build.json"}
    assert main(["build", str(tiny_corpus_dir), "--variant", "rag"]) == 0
    rebuilt = tree(corpus.runs_dir / "rag")
    for name in ("index.faiss", "chunks.jsonl", "manifest.json"):
        if name in clean:
            assert rebuilt[name] == clean[name], name


def test_killed_evaluation_leaves_no_half_report_and_a_rerun_gives_the_same_results(tiny_corpus_dir):
    args = ("eval", str(tiny_corpus_dir), "--variants", "prompted", "--limit", "2")
    corpus = load_corpus(tiny_corpus_dir)
    eval_dir = corpus.runs_dir / "eval"
    duration = timed(*args)
    clean = [json.loads(line) for line in (eval_dir / "latest" / "results.jsonl").read_text().splitlines()]
    shutil.rmtree(eval_dir)
    for seed in SEEDS:
        kill_after(cli(*args), random.Random(seed).uniform(0.2, 1.0) * duration)
        for folder in eval_dir.glob("*"):  # every visible report folder is complete
            if folder.is_dir() and not folder.name.startswith(".") and folder.name not in ("cache", "latest"):
                assert {"metrics.json", "results.jsonl", "report.md", "report.html"} <= {p.name for p in folder.iterdir()}
        for cache in (eval_dir / "cache").glob("*.jsonl"):
            lines = cache.read_text().splitlines()
            for line in lines[:-1]:  # only the last line may be cut by the kill
                json.loads(line)
    assert main(list(args)) == 0
    rerun = [json.loads(line) for line in (eval_dir / "latest" / "results.jsonl").read_text().splitlines()]

    def key(rows):
        return sorted((r["slice"], r["id"], r["variant"], r["answer"], r["outcome"]) for r in rows)

    assert key(rerun) == key(clean)


def test_killed_import_leaves_the_old_corpus_or_the_new_one_and_a_rerun_matches(tmp_path):
    src = IMPORT / "squad.json"
    clean_out, out = tmp_path / "clean", tmp_path / "ferry"
    duration = timed("import", str(src), str(clean_out), "--name", "ferry")
    clean = tree(clean_out)
    out.mkdir()
    (out / "corpus.yaml").write_text("name: old\n")  # an earlier corpus that --force replaces
    (out / "qa.jsonl").write_text("")
    old = tree(out)
    for seed in SEEDS:
        kill_after(cli("import", str(src), str(out), "--name", "ferry", "--force"),
                   random.Random(seed).uniform(0.2, 1.0) * duration)
        # The old corpus, the new one, or (killed between the two renames) the old one set aside
        # for the next run to put back; never a mix.
        assert tree(out) in (old, clean) or (not out.exists() and list(tmp_path.glob(".ferry.old-*"))), seed
        if tree(out) == clean:
            load_corpus(out)
            old = clean
    assert main(["import", str(src), str(out), "--name", "ferry", "--force"]) == 0
    assert tree(out) == clean
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".") and not p.name.endswith(".lock")]
