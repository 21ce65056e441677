"""kill -9 at random points and two processes at once: nothing lost, nothing half-written looks done.

Each test runs the real CLI in a subprocess (as a user would), kills it with SIGKILL after a delay
drawn from a seeded generator, once its work shows on disk. Each kill must land (the process dies
of SIGKILL, its partial state on disk); then the test checks what is left and that a rerun matches
a clean run.
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
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from assistant.variants import training
from assistant.cli import main
from assistant.corpus.corpus import load_corpus

ROOT = Path(__file__).parent.parent
SEEDS = (0, 1, 2)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def cli(*args: str) -> subprocess.Popen:
    # stderr to a file, not a pipe: a pipe nobody reads fills with progress bars and stalls the child.
    log = tempfile.TemporaryFile()
    p = subprocess.Popen([sys.executable, "-m", "assistant.cli", *args], cwd=ROOT, env=ENV,
                         stdout=subprocess.DEVNULL, stderr=log)
    p.log = log
    return p


def stderr_tail(p: subprocess.Popen) -> str:
    p.log.seek(0)
    return p.log.read().decode(errors="replace")[-2000:]


def watch(*args: str, started: Callable[[], bool], finished: Callable[[], bool] | None = None) -> tuple[float, float]:
    """Run the CLI to the end: seconds until `started()` first held, and until `finished()` did (the
    work's result in place; by default, the process's exit)."""
    t0 = time.perf_counter()
    p, seen, done = cli(*args), None, None
    while p.poll() is None:
        assert time.perf_counter() - t0 < 600, f"{args[0]} still running after 10 minutes"
        if seen is None and started():
            seen = time.perf_counter() - t0
        if done is None and finished and finished():
            done = time.perf_counter() - t0
        time.sleep(0.01)
    assert p.returncode == 0, stderr_tail(p)
    assert seen is not None, f"{args[0]}: its work in progress never showed (the test's `started` is wrong)"
    return seen, done or time.perf_counter() - t0


def kill_mid_way(*args: str, started: Callable[[], bool], delay: float) -> None:
    """Start the CLI, wait until `started()` shows its work under way, wait `delay` more and SIGKILL it;
    fail unless the kill landed, i.e. the process died of the signal before it finished."""
    p = cli(*args)
    deadline = time.time() + 300
    while not started():
        assert p.poll() is None, f"finished before its work showed: {stderr_tail(p)}"
        assert time.time() < deadline
        time.sleep(0.01)
    time.sleep(delay)
    p.send_signal(signal.SIGKILL)  # a no-op once it has exited: the returncode then says so
    p.wait()
    assert p.returncode == -signal.SIGKILL, (f"the kill did not land: it finished first (exit {p.returncode}), "
                                             f"{delay:.2f} s after its work showed")


def kill_delay(seed: int, seen: float, done: float) -> float:
    """A random point in the first half of the work, from when it shows to when it is done (half: a
    margin for a run faster than the measured one)."""
    return random.Random(seed).uniform(0, 0.5) * (done - seen)


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
@pytest.mark.slow
def test_a_second_build_or_evaluation_of_the_same_corpus_is_refused_while_one_builds(tiny_corpus_dir, capsys):
    import assistant.variants.build  # noqa: F401  (imported before the race, not during it)
    import assistant.evaluation.runner  # noqa: F401

    configure(tiny_corpus_dir, epochs=40)
    corpus = load_corpus(tiny_corpus_dir)
    first = cli("build", str(tiny_corpus_dir), "--variant", "sft")
    try:
        deadline = time.time() + 120
        while not list((corpus.runs_dir / "sft" / "checkpoints").glob("checkpoint-*")):
            assert first.poll() is None, stderr_tail(first)
            assert time.time() < deadline
            time.sleep(0.05)
        assert main(["build", str(tiny_corpus_dir), "--variant", "sft"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: locked: another process is building or evaluating corpus 'tiny'"), err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert main(["eval", str(tiny_corpus_dir), "--variants", "prompted", "--limit", "1"]) == 2
        assert "locked" in capsys.readouterr().err
        first.wait(timeout=300)
        assert first.returncode == 0, stderr_tail(first)
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
@pytest.mark.slow
def test_killed_forced_rebuild_keeps_the_good_adapter_and_a_rerun_completes(tiny_corpus_dir):
    configure(tiny_corpus_dir)
    corpus = load_corpus(tiny_corpus_dir)
    args = ("build", str(tiny_corpus_dir), "--variant", "sft")
    checkpoints, adapter = corpus.runs_dir / "sft" / "checkpoints", corpus.runs_dir / "sft" / "adapter"

    def checkpointed() -> bool:  # training under way: a complete checkpoint of this run is on disk
        return any((p / "trainer_state.json").is_file() for p in checkpoints.glob("checkpoint-*"))

    seen, duration = watch(*args, started=checkpointed)
    good = tree(adapter)
    for seed in SEEDS:
        shutil.rmtree(checkpoints)  # as --force does first: the checkpoints that show are the new run's
        kill_mid_way(*args, "--force", started=checkpointed, delay=kill_delay(seed, seen, duration))
        assert checkpointed(), seed
        # A built adapter is there, whole, counts as built, and is the good one (the old adapter, or
        # a complete new one with the same weights: training is seeded).
        assert training.is_trained(corpus, "sft") and adapter_is_whole(corpus), seed
        now = tree(adapter)
        assert set(now) == set(good) and now["adapter_model.safetensors"] == good["adapter_model.safetensors"], seed
    assert main([*args, "--force"]) == 0
    # The rerun's weights are the clean run's, byte for byte (the config's target_modules list
    # follows set order, which varies between processes).
    assert tree(adapter)["adapter_model.safetensors"] == good["adapter_model.safetensors"]
    assert not list((corpus.runs_dir / "sft").glob(".adapter.*"))


@pytest.mark.slow
def test_killed_index_build_never_looks_built_and_a_rerun_matches_a_clean_one(tiny_corpus_dir):
    from assistant.variants.retrieval import is_index_fresh

    corpus = load_corpus(tiny_corpus_dir)
    args = ("build", str(tiny_corpus_dir), "--variant", "rag")
    lock = corpus.runs_dir / ".corpus.lock"  # taken first by a build (assistant/variants/build.py)
    seen, duration = watch(*args, started=lock.exists)
    clean = tree(corpus.runs_dir / "rag")
    shutil.rmtree(corpus.runs_dir / "rag")
    for seed in SEEDS:
        lock.unlink(missing_ok=True)  # left by the last process: its appearing says this one has started building
        kill_mid_way(*args, "--force", started=lock.exists, delay=kill_delay(seed, seen, duration))
        # Killed before its end, the index is not there, or (killed between its swap and the exit)
        # complete; never a part of one that looks built.
        assert not (corpus.runs_dir / "rag" / "index.faiss").exists() or is_index_fresh(corpus), seed
        if is_index_fresh(corpus):
            assert {k for k in tree(corpus.runs_dir / "rag") if k != "build.json"} == \
                   {k for k in clean if k != "build.json"}
    # The rerun as the clean run ran (a process with the same thread count): on an Intel AMX Xeon
    # the embedder's fp32 vectors differ in their last bits between one thread and two.
    lock.unlink(missing_ok=True)
    watch(*args, started=lock.exists)
    rebuilt = tree(corpus.runs_dir / "rag")
    for name in ("index.faiss", "chunks.jsonl", "manifest.json"):
        if name in clean:
            assert rebuilt[name] == clean[name], name


@pytest.mark.slow
def test_killed_evaluation_leaves_no_half_report_and_a_rerun_gives_the_same_results(tiny_corpus_dir):
    with open(tiny_corpus_dir / "corpus.yaml", "a") as f:
        f.write("evaluation:\n  chunk_questions: 1\n")  # each answer appended on its own: progress shows
    args = ("eval", str(tiny_corpus_dir), "--variants", "prompted", "--limit", "2")
    corpus = load_corpus(tiny_corpus_dir)
    eval_dir = corpus.runs_dir / "eval"

    def answered() -> bool:
        return any(p.stat().st_size for p in (eval_dir / "cache").glob("*.jsonl"))

    seen, duration = watch(*args, started=answered)
    clean = [json.loads(line) for line in (eval_dir / "latest" / "results.jsonl").read_text().splitlines()]
    shutil.rmtree(eval_dir)
    for seed in SEEDS:
        shutil.rmtree(eval_dir / "cache", ignore_errors=True)  # the answers that show are this run's
        kill_mid_way(*args, started=answered, delay=kill_delay(seed, seen, duration))
        assert answered(), seed
        for folder in eval_dir.glob("*"):  # every visible report folder is complete
            if folder.is_dir() and not folder.name.startswith(".") and folder.name not in ("cache", "latest"):
                assert {"metrics.json", "results.jsonl", "report.md", "report.html"} <= {p.name for p in folder.iterdir()}
        for cache in (eval_dir / "cache").glob("*.jsonl"):
            lines = cache.read_text().splitlines()
            for line in lines[:-1]:  # only the last line may be cut by the kill
                json.loads(line)
    assert main(list(args)) == 0  # resumes from the last killed run's answers
    rerun = [json.loads(line) for line in (eval_dir / "latest" / "results.jsonl").read_text().splitlines()]

    def key(rows):
        return sorted((r["slice"], r["id"], r["variant"], r["answer"], r["outcome"]) for r in rows)

    assert key(rerun) == key(clean)


def squad(n: int) -> dict:
    """A SQuAD file of n one-paragraph articles: enough for the import to spend a second writing."""
    data = []
    for i in range(n):
        minutes = f"{10 + i % 50} minutes"
        context = f"Ferry {i} crosses from Port Amsel to Kittering. The crossing takes {minutes}."
        data.append({"title": f"Ferry_{i}", "paragraphs": [{"context": context, "qas": [
            {"id": f"f{i}", "question": f"How long does ferry {i} take?",
             "answers": [{"text": minutes, "answer_start": context.index(minutes)}]}]}]})
    return {"version": "v2.0", "data": data}


def new_temporary(parent: Path, name: str) -> Callable[[], bool]:
    """True once an `atomic_dir` temporary for `name` appears that was not there before: the import
    is writing its corpus."""
    before = set(parent.glob(f".{name}.tmp-*"))
    return lambda: bool(set(parent.glob(f".{name}.tmp-*")) - before)


@pytest.mark.slow
def test_killed_import_leaves_the_old_corpus_or_the_new_one_and_a_rerun_matches(tmp_path):
    src = tmp_path / "squad.json"
    src.write_text(json.dumps(squad(400)))
    clean_out, out = tmp_path / "clean", tmp_path / "ferry"
    seen, done = watch("import", str(src), str(clean_out), "--name", "ferry",
                       started=new_temporary(tmp_path, "clean"), finished=clean_out.exists)
    clean = tree(clean_out)
    out.mkdir()
    (out / "corpus.yaml").write_text("name: old\n")  # an earlier corpus that --force replaces
    (out / "qa.jsonl").write_text("")
    old = tree(out)
    for seed in SEEDS:
        kill_mid_way("import", str(src), str(out), "--name", "ferry", "--force",
                     started=new_temporary(tmp_path, "ferry"), delay=kill_delay(seed, seen, done))
        # Killed while writing: the half-written corpus is in a temporary (or the old one set aside)...
        assert list(tmp_path.glob(".ferry.tmp-*")) or list(tmp_path.glob(".ferry.old-*")), seed
        # ...and the folder holds the old corpus, the new one, or (killed between the two renames)
        # nothing, the old one set aside for the next run to put back; never a mix.
        assert tree(out) in (old, clean) or (not out.exists() and list(tmp_path.glob(".ferry.old-*"))), seed
        if tree(out) == clean:
            load_corpus(out)
            old = clean
    assert main(["import", str(src), str(out), "--name", "ferry", "--force"]) == 0
    assert tree(out) == clean
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".") and not p.name.endswith(".lock")]
