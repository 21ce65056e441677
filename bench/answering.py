"""The evaluation's own answering: Hugging Face `generate` against the engine, on one corpus.

    python bench/answering.py corpora/ecostride [--limit 48] [--dtype float32|bfloat16] [--batch 16] [--threads 1]
                              [--engine-batch N] [--batch-tokens N]

Takes the test split's questions, builds the prompts `prompted` and `rag` send (the index must be
built: `assistant build CORPUS --variant rag`), at most --limit of each, and answers all of them, in
one run on this machine:
- HF generate: `model.generate` with its defaults (greedy, plain SDPA, left padding), in static
  batches of --batch prompts in the evaluation's order, on its own copy of the model as loaded;
- the engine: `Engine.generate` over all of them at once (continuous batching, prompts prefilled
  together chunk by chunk with a prefix cache, batch-invariant decoding, linear layers on
  prepacked weights), as the evaluation calls
  it: at most the corpus's `evaluation.batch_size` rows and `evaluation.batch_tokens` prompt tokens
  live (--engine-batch, --batch-tokens override them; --engine-batch 16 --batch-tokens 0 gives HF's
  row count);
- the engine once more with every prompt alone, to count answers identical alone and in the mix.
Prints each, the share of the linear-layer bound the engine reached (bench/limits.py's measure: the
time the model's linear layers alone need for the prompt tokens the engine computed and its
decoding rows, at its average rows per step), and closes with one line:

    answering N prompts of CORPUS: engine X tok/s, HF generate Y tok/s: Z.ZZx; identical K/N

tok/s counts answer tokens over wall time, prefill included. Not a test: numbers depend on the
machine and its load.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from limits import timed  # noqa: E402  (bench/limits.py: this script's folder is on sys.path)

from assistant.corpus.corpus import load_corpus  # noqa: E402
from assistant.model.engine import Engine, Messages  # noqa: E402
from assistant.model.loading import load_model  # noqa: E402
from assistant.runtime import cpu_name, quiet_libraries  # noqa: E402
from assistant.variants import load_variant, open_engine, variant_class  # noqa: E402


def prompts(corpus, engine: Engine, limit: int) -> list[Messages]:
    """The distinct messages `prompted` and `rag` send for the first `limit` test questions (rag's
    declined questions send none)."""
    questions = [q.question for q in corpus.questions("test")][:limit]
    out: list[Messages] = []
    for name in ("prompted", "rag"):
        if variant_class(name).needs_build and not variant_class(name).is_built(corpus):
            sys.exit(f"{name} is not built: run `assistant build {corpus.root} --variant {name}` first")
        variant = load_variant(name, corpus, engine)
        out += [p.messages for p in variant.prompts_many(questions) if p.messages is not None]
    # A prompt sent twice is decoded once by the engine: counting it twice would flatter it.
    unique = {engine.render(m): m for m in out}
    return list(unique.values())


def hf_generate(corpus, engine: Engine, convs: list[Messages], batch: int, max_new: int) -> tuple[int, float]:
    """Answer tokens and seconds of `model.generate` with defaults, in static batches of `batch`, on
    its own copy of the model as `transformers` loads it (the engine's has packed linear layers)."""
    model, tok = load_model(corpus.config.model, evaluation=True)
    stop = engine._stop_ids()
    tok.padding_side = "left"
    tokens, t0 = 0, time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(convs), batch):
            texts = [engine.render(m) for m in convs[start:start + batch]]
            enc = tok(texts, add_special_tokens=False, return_tensors="pt", padding=True).to(model.device)
            out = model.generate(**enc, max_new_tokens=max_new, do_sample=False,
                                 pad_token_id=tok.pad_token_id)[:, enc["input_ids"].shape[1]:]
            tokens += sum(next((k for k, t in enumerate(row) if t in stop), len(row)) for row in out.tolist())
    return tokens, time.perf_counter() - t0


def linear_bound_s(engine: Engine, prefill_tokens: int, row_steps: int, rows: int) -> float:
    """Least time the model's linear layers alone take for this much prefill and decoding (the LM
    head only for the rows that produce a token), measured now on this machine as bench/limits.py does,
    on the engine's own layers (their kernels: kernels.py)."""
    model = engine.model
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    head = model.get_output_embeddings()
    body = [m for m in layers if m is not head]

    def per_call(ms: list[torch.nn.Linear], n: int) -> float:
        x = {m.in_features: torch.randn(n, m.in_features, dtype=engine.dtype, device=engine.device) for m in ms}
        return timed(lambda: [m(x[m.in_features]) for m in ms], 1.0)

    with torch.inference_mode():
        step = per_call(layers, rows) / rows  # per decoding row, at the engine's batch
        token = per_call(body, 512) / 512  # per prompt token
    return step * row_steps + token * prefill_tokens


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus")
    ap.add_argument("--limit", type=int, default=48, help="test questions per variant (run time: ~10 min at 48)")
    ap.add_argument("--batch", type=int, default=16, help="HF generate's static batch")
    ap.add_argument("--engine-batch", type=int, help="the engine's most rows (default: evaluation.batch_size)")
    ap.add_argument("--batch-tokens", type=int, help="the engine's most live prompt tokens, 0 for no bound "
                                                       "(default: evaluation.batch_tokens)")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], help="override model.eval_dtype")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (each evaluation worker uses 1)")
    args = ap.parse_args()
    quiet_libraries()
    torch.set_num_threads(args.threads)
    corpus = load_corpus(args.corpus)
    if args.dtype:
        corpus.config.model.eval_dtype = args.dtype
    engine = open_engine(corpus)
    evaluation = corpus.config.evaluation
    engine_batch = args.engine_batch or evaluation.batch_size
    batch_tokens = evaluation.batch_tokens if args.batch_tokens is None else (args.batch_tokens or None)
    max_new = engine.max_new_tokens
    convs = prompts(corpus, engine, args.limit)
    n = len(convs)
    lengths = [engine.count_tokens(engine.render(m)) for m in convs]
    print(f"{corpus.name}: {n} prompts (prompted and rag, {min(lengths)}-{max(lengths)} tokens, "
          f"{sum(lengths) / n:.0f} on average), max_new_tokens {max_new}; {cpu_name()} "
          f"({torch.backends.cpu.get_cpu_capability()}), {torch.get_num_threads()} threads, "
          f"{str(engine.dtype).removeprefix('torch.')}; engine plan: {engine.plan()}; HF generate: static batches "
          f"of {args.batch}; engine: up to {engine_batch} rows and {batch_tokens or 'any number of'} live prompt tokens",
          flush=True)

    hf_tokens, hf_s = hf_generate(corpus, engine, convs, args.batch, max_new)
    print(f"HF generate: {hf_tokens} answer tokens in {hf_s:.1f} s: {hf_tokens / hf_s:.1f} tok/s", flush=True)

    before = replace(engine.stats)
    t0 = time.perf_counter()
    with engine.batched(engine_batch, batch_tokens):
        mixed = engine.generate(convs)
    engine_s = time.perf_counter() - t0
    row_steps, steps = engine.stats.row_steps - before.row_steps, engine.stats.steps - before.steps
    engine_tokens = sum(g.completion_tokens for g in mixed)
    print(f"engine: {engine_tokens} answer tokens in {engine_s:.1f} s: {engine_tokens / engine_s:.1f} tok/s "
          f"({row_steps} row-steps in {steps} steps, {row_steps / max(1, steps):.1f} rows per step, "
          f"{row_steps / max(1, engine_tokens):.2f} per answer token)", flush=True)

    prefill, copied = engine.stats.prefilled - before.prefilled, engine.stats.cached - before.cached
    bound = linear_bound_s(engine, prefill, row_steps, max(1, round(row_steps / max(1, steps))))
    print(f"prompts: {prefill} tokens computed, {copied} copied from the prefix cache; linear-layer bound for "
          f"that work ({prefill} prefill tokens, {row_steps} decoding rows): {bound:.1f} s, so the engine ran "
          f"at {bound / engine_s:.0%} of it", flush=True)

    alone = [engine.generate([m], batch_size=1)[0].text for m in convs]
    identical = sum(a == g.text for a, g in zip(alone, mixed))
    print(f"answering {n} prompts of {corpus.name}: engine {engine_tokens / engine_s:.1f} tok/s, "
          f"HF generate {hf_tokens / hf_s:.1f} tok/s: {(engine_tokens / engine_s) / (hf_tokens / hf_s):.2f}x; "
          f"identical {identical}/{n}")
    return 0 if identical == n else 1


if __name__ == "__main__":
    sys.exit(main())
