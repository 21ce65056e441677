"""Peak memory of training, stage by stage: the real `assistant build` code path, a few steps of it.

    python bench/training_memory.py [CORPUS] [--variants sft,rag_sft] [--steps 3] [--val 16]

Each variant trains in a fresh process with training.train(), as `assistant build` does, on the
corpus's first `--steps` batches of train pairs (one epoch, so the run ends with one val pass, a
checkpoint and the published adapter), in a temporary runs folder; rag_sft first builds the index
there. A thread samples the resident set every 10 ms and the Trainer's callbacks mark the phases, so
the closing table gives the peak of each phase (loading and data preparation, optimisation steps,
evaluation, saving) and the stage's high-water mark as the report card records it. Use a corpus whose
answers fill the 512-token rows (bench/long_answers.py writes one) to see the worst case.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class Sampler:
    """The resident set every `interval` seconds, tagged with the phase named last."""

    def __init__(self, interval: float = 0.01):
        self.phase, self.peaks, self._stop = "load", {}, threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def _run(self, interval: float) -> None:
        while not self._stop.is_set():
            self.peaks[self.phase] = max(self.peaks.get(self.phase, 0.0), rss_mb())
            time.sleep(interval)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        return {k: round(v) for k, v in self.peaks.items()}


def run_one(corpus_path: str, variant: str, steps: int, n_val: int) -> dict:
    from transformers import TrainerCallback

    from assistant.corpus.corpus import load_corpus
    from assistant.runtime import quiet_libraries
    from assistant.variants import training

    quiet_libraries()
    sampler = Sampler()
    corpus = load_corpus(corpus_path)
    corpus.config.runs_dir = tempfile.mkdtemp(prefix="bench-memory-")
    index = {}
    if variant == "rag_sft":
        from assistant.variants.retrieval import build_index

        sampler.phase = "index"
        index = build_index(corpus)
        sampler.phase = "load"
    job = training.sft_job(corpus) if variant == "sft" else training.rag_sft_job(corpus)
    job.train, job.val, job.epochs = job.train[:steps * corpus.config.lora.batch_size], job.val[:n_val], 1

    class Phases(TrainerCallback):
        def on_step_begin(self, *a, **k):
            sampler.phase = "train steps"

        def on_step_end(self, *a, **k):
            sampler.phase = "between steps"  # evaluation and checkpointing follow a step's end

        def on_prediction_step(self, *a, **k):
            sampler.phase = "evaluation"

        def on_save(self, *a, **k):
            sampler.phase = "save"

    make = training._callbacks
    training._callbacks = lambda s, has_eval: make(s, has_eval) + [Phases()]
    log = training.train(corpus, job, "bench", progress=False)
    sampler.phase = "publish"
    peaks = sampler.stop()
    return {"variant": variant, "phases_peak_mb": peaks, "stage_peak_mb": log["peak_memory_mb"],
            "index_peak_mb": index.get("peak_memory_mb"), "train_rows": len(job.train), "steps": log["steps"],
            "tokens_per_s": log.get("train_tokens_per_s")}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("corpus", nargs="?", default="/tmp/long-answers")
    p.add_argument("--variants", default="sft,rag_sft")
    p.add_argument("--steps", type=int, default=3, help="optimisation steps per variant")
    p.add_argument("--val", type=int, default=16, help="val pairs of the closing evaluation")
    p.add_argument("--run", help=argparse.SUPPRESS)  # internal: one variant, JSON on stdout
    a = p.parse_args()
    if a.run:
        print("RESULT " + json.dumps(run_one(a.corpus, a.run, a.steps, a.val)), flush=True)
        return 0
    for variant in a.variants.split(","):
        proc = subprocess.run([sys.executable, __file__, a.corpus, "--run", variant, "--steps", str(a.steps),
                               "--val", str(a.val)], capture_output=True, text=True)
        line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
        if line is None:
            sys.exit(f"{variant} failed:\n{proc.stderr[-3000:]}")
        r = json.loads(line.removeprefix("RESULT "))
        phases = ", ".join(f"{k} {v}" for k, v in r["phases_peak_mb"].items())
        print(f"{variant}: stage peak {r['stage_peak_mb']:.0f} MB (report card); RSS peaks by phase (MB): {phases}; "
              f"{r['steps']} steps on {r['train_rows']} rows, {r['tokens_per_s']} tokens/s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
