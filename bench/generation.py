"""Generation throughput of the shared engine: batch 1 versus the default batch size.

    python bench/generation.py [--model smollm2-135m-instruct] [--questions 32] [--batch 16]

Prints tokens/s at each batch size and their ratio. Not a test: numbers depend on the machine and
its load, so run it twice and quote the median.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from assistant.config import GenerationSettings, ModelSettings  # noqa: E402
from assistant.generation import Engine  # noqa: E402
from assistant.models import load_model  # noqa: E402

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
    args = ap.parse_args()

    model, tok = load_model(ModelSettings(name=args.model))
    engine = Engine(model, tok, max_new_tokens=args.max_new_tokens)
    questions = (QUESTIONS * (args.questions // len(QUESTIONS) + 1))[: args.questions]
    print(f"model {args.model} on {model.device} ({model.dtype}), {len(questions)} questions, "
          f"max_new_tokens {args.max_new_tokens}, median of {args.repeats}")
    # Batch 1 is slow: time it on a quarter of the questions.
    one, n1 = tokens_per_s(engine, questions[: max(4, len(questions) // 4)], 1, args.repeats)
    many, nb = tokens_per_s(engine, questions, args.batch, args.repeats)
    print(f"{'batch':>6} {'tokens/s':>9} {'tokens/answer':>14}")
    print(f"{1:>6} {one:>9.1f} {n1:>14.1f}")
    print(f"{args.batch:>6} {many:>9.1f} {nb:>14.1f}")
    print(f"ratio batch {args.batch} / batch 1: {many / one:.1f}x")


if __name__ == "__main__":
    main()
