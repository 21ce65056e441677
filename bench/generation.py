"""Generation throughput of the shared engine: fp32 vs bf16, batch 1 vs the default batch size.

    python bench/generation.py [--model smollm2-135m-instruct] [--questions 32] [--batch 16]
                               [--dtypes float32 bfloat16] [--plain]

Prints tokens/s for each dtype at batch 1 and at the batch size, side by side in one run, and
the ratios (bf16 / fp32 at each batch size, batch / 1 for each dtype). `--plain` adds rows with
the batch-invariant decoding switched off (plain batched SDPA, no filling of short batches), to
show what invariance costs. bf16 is only measured where the CPU has native bf16 (or on CUDA),
unless named in --dtypes. Not a test: numbers depend on the machine and its load, so run it twice
and quote the median.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from assistant.config import GenerationSettings, ModelSettings  # noqa: E402
from assistant.generation import Engine  # noqa: E402
from assistant.models import cpu_supports_bf16, load_model  # noqa: E402
from assistant.runtime import cpu_name, quiet_libraries  # noqa: E402

QUESTIONS = [
    "What is the capital of France?", "How many legs does a spider have?",
    "Name three colours of the rainbow.", "What do bees make?",
    "Why is the sky blue? Answer in one sentence.", "What is the largest planet in the solar system?",
    "How many days are in a leap year?", "What is water made of?",
]


def tokens_per_s(engine: Engine, questions: list[str], batch: int, repeats: int) -> tuple[float, float]:
    convs = [[{"role": "user", "content": q}] for q in questions]
    engine.generate(convs[: min(batch, 4)], batch_size=batch)  # warm-up
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        gens = engine.generate(convs, batch_size=batch)
        rates.append(sum(g.completion_tokens for g in gens) / (time.perf_counter() - t0))
    return statistics.median(rates), statistics.mean(g.completion_tokens for g in gens)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=ModelSettings().name)
    ap.add_argument("--questions", type=int, default=32)
    ap.add_argument("--batch", type=int, default=GenerationSettings().batch_size)
    ap.add_argument("--max-new-tokens", type=int, default=GenerationSettings().max_new_tokens)
    ap.add_argument("--repeats", type=int, default=3)
    native_bf16 = cpu_supports_bf16() or torch.cuda.is_available()
    ap.add_argument("--dtypes", nargs="+", choices=["float32", "bfloat16"],
                    default=["float32", "bfloat16"] if native_bf16 else ["float32"])
    ap.add_argument("--plain", action="store_true", help="also measure with batch invariance off")
    args = ap.parse_args()
    quiet_libraries()

    questions = (QUESTIONS * (args.questions // len(QUESTIONS) + 1))[: args.questions]
    print(f"model {args.model}, {cpu_name()} ({torch.backends.cpu.get_cpu_capability()}), "
          f"{torch.get_num_threads()} threads, {len(questions)} questions, max_new_tokens {args.max_new_tokens}, "
          f"median of {args.repeats}")
    print(f"{'dtype':>9} {'invariant':>9} {'batch 1':>9} {f'batch {args.batch}':>9} {'ratio':>6}  tokens/s")
    rates: dict[tuple[str, bool], tuple[float, float]] = {}
    for dtype in args.dtypes:
        model, tok = load_model(ModelSettings(name=args.model, dtype=dtype))
        for invariant in (True, False) if args.plain else (True,):
            model.set_attn_implementation("sdpa")  # each engine sets its own below
            engine = Engine(model, tok, max_new_tokens=args.max_new_tokens, batch_invariant=invariant)
            # Batch 1 is slow: time it on a quarter of the questions.
            one, _ = tokens_per_s(engine, questions[: max(4, len(questions) // 4)], 1, args.repeats)
            many, _ = tokens_per_s(engine, questions, args.batch, args.repeats)
            rates[dtype, invariant] = (one, many)
            print(f"{dtype:>9} {str(invariant):>9} {one:>9.1f} {many:>9.1f} {many / one:>5.1f}x", flush=True)
    if ("float32", True) in rates and ("bfloat16", True) in rates:
        (f1, fb), (b1, bb) = rates["float32", True], rates["bfloat16", True]
        print(f"ratio bf16 / fp32: batch 1 {b1 / f1:.2f}x, batch {args.batch} {bb / fb:.2f}x")
    for dtype in args.dtypes:
        if (dtype, False) in rates:
            (i1, ib), (p1, pb) = rates[dtype, True], rates[dtype, False]
            print(f"ratio invariant / plain ({dtype}): batch 1 {i1 / p1:.2f}x, batch {args.batch} {ib / pb:.2f}x")


if __name__ == "__main__":
    main()
