"""LoRA training throughput: TRL's plain defaults versus this project's settings (same data, same LoRA).

    python bench/training.py [CORPUS] [--steps 12] [--warmup 2] [--rounds 1] [--val 64]
                             [--configs plain,plain_fp32,project]

The default configurations depend on the CPU: with native bf16 (AVX-512-bf16, AMX) or a GPU,
plain, plain_fp32 and project; without (AVX2), plain_fp32 and project, since TRL's literal
defaults then run bf16 in emulation (5.5 tokens/s measured on an AVX2 CPU: minutes per step).

Each configuration trains the corpus's model on the corpus's train QA pairs in a fresh process, the
configurations back to back (alternating over rounds), and reports real (non-pad) tokens per
second over the optimisation steps after the warm-up ones, as counted by TRL (`num_tokens`), and
the val loss after the last step on the first `--val` val pairs (the loss curve must not change:
plain and project see the data in another order, so their val losses agree within noise, while an
ablation of project sees the same batches and should agree closely).

    plain         SFTConfig() defaults (bf16 autocast, activation checkpointing, batch 8, random
                  order); use_cpu=True on CPU, without which TRL's default bf16 refuses to start
    plain_fp32    plain, but fp32: isolates the dtype choice on CPUs without native bf16
    project       assistant.variants.training.sft_config and the SharedPrefixSFTTrainer: what `assistant build`
                  trains with (the dtype is picked per CPU: bf16 with native bf16, else fp32)
    ablations     project with one choice reverted or changed: no_shared_prefix (every row runs the
                  system prompt itself), full_head (TRL scores every position
                  in the LM head, not only the answer tokens), big_tiles (TRL's own LM-head tiles
                  of 4096 positions x 32768 vocabulary entries on CPU too), whole_batch (no
                  micro-batches: a step in one pass whatever lora.max_batch_tokens), +checkpointing, random_order,
                  batch8, batch32, attn_only (LoRA on q,k,v,o), padding_free, threads1, dropout0,
                  compile (torch.compile, inductor)

The machine may be shared: compare the ratio of runs taken back to back, not absolute figures
from different moments. The closing lines print project/plain and project/plain_fp32 (medians over
rounds), in tokens per wall second and per CPU second (less sensitive to other work on the machine).
To see what an AVX2-only CPU does, cap the kernels (an emulation, not a real AVX2 CPU):
ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 python bench/training.py
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CONFIGS = ["plain", "plain_fp32", "project", "no_shared_prefix", "full_head", "big_tiles", "whole_batch", "+checkpointing",
           "random_order", "batch8", "batch32", "attn_only", "padding_free", "threads1", "dropout0", "compile"]


def run_one(corpus_path: str, name: str, steps: int, warmup: int, n_val: int) -> dict:
    """Train `steps` steps under configuration `name` in this process; return the measurement."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback
    from transformers.utils import logging as hf_logging
    from trl import SFTConfig, SFTTrainer

    from assistant.variants import training
    from assistant.corpus.corpus import load_corpus
    from assistant.model.loading import load_tokenizer, pick_device, pick_dtype, resolve_model
    from assistant.variants.shared_prefix import SharedPrefixSFTTrainer

    hf_logging.set_verbosity_error()
    corpus = load_corpus(corpus_path)
    s = corpus.config.lora
    if name == "dropout0":
        s = s.model_copy(update={"dropout": 0.0})
    if name == "attn_only":
        s = s.model_copy(update={"target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]})
    if name == "threads1":
        torch.set_num_threads(1)
    rows = training.qa_examples(corpus, "train")
    val = training.qa_examples(corpus, "val")[:n_val]
    path = resolve_model(corpus.config.model.name)
    device = pick_device(corpus.config.model.device)
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-training-{os.getpid()}"
    common = dict(max_steps=steps, save_strategy="no", eval_strategy="no", logging_steps=1, report_to="none",
                  disable_tqdm=True)
    if name.startswith("plain"):
        dtype = None  # from_pretrained's own default
        args = SFTConfig(output_dir=str(out), use_cpu=device.type == "cpu", **common,
                         **({"bf16": False} if name == "plain_fp32" else {}))
    else:
        if name != "full_head":
            training.score_labelled_positions_only()
        if name != "big_tiles":
            training.small_lm_head_tiles(device.type)
        dtype = pick_dtype(corpus.config.model.dtype, device)
        tokenizer = load_tokenizer(path)
        longest = min(s.max_length, max(training.row_tokens(r, tokenizer) for r in rows + val))
        micro = s.batch_size if name == "whole_batch" else training.micro_batch_size(s, longest)
        change = {"+checkpointing": {training.checkpointing_argument(SFTConfig): True},
                  "random_order": {"train_sampling_strategy": "random"},
                  "batch8": {"per_device_train_batch_size": 8, "gradient_accumulation_steps": 1},
                  "batch32": {"per_device_train_batch_size": 32, "gradient_accumulation_steps": 1},
                  "padding_free": {"padding_free": True, "max_length": None},
                  "compile": {"torch_compile": True}}.get(name, {})
        args = training.sft_config(s, out, 1, 1, False, device.type, dtype, progress=False, micro_batch=micro,
                                   completion_only_loss=True, **{**common, **change})
    model = AutoModelForCausalLM.from_pretrained(path, **({"dtype": dtype} if dtype else {}))

    class Meter(TrainerCallback):
        def __init__(self):
            self.marks: list[tuple[float, float, float]] = []  # (wall, CPU seconds, tokens) after each step

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "num_tokens" in logs and "loss" in logs:
                self.marks.append((time.perf_counter(), time.process_time(), float(logs["num_tokens"])))

    meter = Meter()
    cls = SFTTrainer if name.startswith("plain") else SharedPrefixSFTTrainer
    trainer = cls(model=model, args=args, train_dataset=Dataset.from_list(rows),
                  eval_dataset=Dataset.from_list(val) if val else None,
                  processing_class=load_tokenizer(path), peft_config=training.lora_config(s), callbacks=[meter])
    if name == "no_shared_prefix":
        trainer.shared_prefix = False
    try:
        trainer.train()
        val_loss = trainer.evaluate()["eval_loss"] if val else None
    finally:
        shutil.rmtree(out, ignore_errors=True)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    (t0, c0, n0), (t1, c1, n1) = meter.marks[warmup - 1], meter.marks[-1]
    # CPU seconds (all threads) are far less sensitive than wall time to other work on the machine.
    return {"config": name, "tokens_per_s": round((n1 - n0) / (t1 - t0), 1),
            "tokens_per_cpu_s": round((n1 - n0) / (c1 - c0), 1), "s_per_step": round((t1 - t0) / (len(meter.marks) - warmup), 2),
            "tokens_per_step": round((n1 - n0) / (len(meter.marks) - warmup)), "steps": len(meter.marks),
            "batch_size": args.per_device_train_batch_size * args.gradient_accumulation_steps,
            "micro_batch": args.per_device_train_batch_size, "bf16": bool(args.bf16),
            "checkpointing": bool(getattr(args, training.checkpointing_argument(type(args)))), "sampler": args.train_sampling_strategy,
            "threads": torch.get_num_threads(), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "dtype": str(model.dtype).removeprefix("torch."), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "train_loss_last4": round(sum(losses[-4:]) / len(losses[-4:]), 4),
            "val_loss": None if val_loss is None else round(val_loss, 4)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("corpus", nargs="?", default="corpora/ecostride")
    p.add_argument("--steps", type=int, default=12, help="optimisation steps per configuration")
    p.add_argument("--warmup", type=int, default=2, help="first steps left out of the rate")
    p.add_argument("--rounds", type=int, default=1, help="repeat the configurations, alternating")
    p.add_argument("--val", type=int, default=64, help="val pairs whose loss is printed after the last step (0: none)")
    p.add_argument("--configs", help=f"comma-separated, from: {', '.join(CONFIGS)} (default: see above)")
    p.add_argument("--run", help=argparse.SUPPRESS)  # internal: one configuration, JSON on stdout
    a = p.parse_args()
    if a.run:
        print("RESULT " + json.dumps(run_one(a.corpus, a.run, a.steps, a.warmup, a.val)), flush=True)
        return
    names = (a.configs or default_configs()).split(",")
    unknown = set(names) - set(CONFIGS)
    if unknown:
        sys.exit(f"unknown configuration(s) {sorted(unknown)}; choose from {', '.join(CONFIGS)}")
    results: dict[str, list[dict]] = {n: [] for n in names}
    load_before = f"{os.getloadavg()[0]:.2f}"
    for r in range(a.rounds):
        for n in (names if r % 2 == 0 else names[::-1]):
            proc = subprocess.run([sys.executable, __file__, a.corpus, "--run", n, "--steps", str(a.steps),
                                   "--warmup", str(a.warmup), "--val", str(a.val)], capture_output=True, text=True)
            line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
            if line is None:
                sys.exit(f"{n} failed:\n{proc.stderr[-3000:]}")
            res = json.loads(line.removeprefix("RESULT "))
            results[n].append(res)
            print(json.dumps(res), file=sys.stderr, flush=True)
    def med(n: str, key: str) -> float:
        return statistics.median(x[key] for x in results[n])

    first = names[0]
    w = len(first) + 4
    print(f"\nload average before/after: {load_before} / {os.getloadavg()[0]:.2f}; CPU capability "
          f"{results[first][-1]['cpu_capability']}; {torch_threads(results)} thread(s)")
    print(f"{'config':<18}{'dtype':>9}{'tokens/s':>10}{'x ' + first:>{w}}{'tok/CPU-s':>11}{'x ' + first:>{w}}"
          f"{'s/step':>9}{'tok/step':>10}{'peak MB':>9}{'train loss':>12}{'val loss':>10}")
    for n in names:
        last = results[n][-1]
        vals = [x["val_loss"] for x in results[n] if x["val_loss"] is not None]
        print(f"{n:<18}{last['dtype']:>9}{med(n, 'tokens_per_s'):>10.1f}{med(n, 'tokens_per_s') / med(first, 'tokens_per_s'):>{w}.2f}"
              f"{med(n, 'tokens_per_cpu_s'):>11.1f}{med(n, 'tokens_per_cpu_s') / med(first, 'tokens_per_cpu_s'):>{w}.2f}"
              f"{last['s_per_step']:>9.2f}{last['tokens_per_step']:>10}{last['peak_rss_mb']:>9}"
              f"{med(n, 'train_loss_last4'):>12.4f}{statistics.median(vals) if vals else float('nan'):>10.4f}")
    print()
    for base in ("plain", "plain_fp32"):
        if base in results and "project" in results:
            print(f"project settings: {med('project', 'tokens_per_s'):.1f} tokens/s vs TRL {base} defaults "
                  f"{med(base, 'tokens_per_s'):.1f} tokens/s: {med('project', 'tokens_per_s') / med(base, 'tokens_per_s'):.2f}x "
                  f"(per CPU-second: {med('project', 'tokens_per_cpu_s') / med(base, 'tokens_per_cpu_s'):.2f}x; "
                  f"{a.rounds} round(s) of {a.steps} steps, medians)")


def default_configs() -> str:
    import torch

    from assistant.model.loading import cpu_supports_bf16

    return "plain,plain_fp32,project" if cpu_supports_bf16() or torch.cuda.is_available() else "plain_fp32,project"


def torch_threads(results: dict) -> str:
    return ",".join(sorted({str(r["threads"]) for rs in results.values() for r in rs}))


if __name__ == "__main__":
    main()
