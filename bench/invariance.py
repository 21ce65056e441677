"""Check that every built variant answers a question alone exactly as amid others, joining and leaving.

    python bench/invariance.py corpora/ecostride [--questions 16] [--dtype float32|bfloat16] [--variants ...]

Takes test questions from the shortest to the longest plus one compound question several times
longer, answers each one alone, then all of them through the evaluation's engine in one continuous
batch with a row for each and again with a third as many rows (questions join as others finish, at
any step), and compares the texts byte for byte. Prints one line per variant; exit code 1 when any answer differs.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from assistant.config import VARIANTS
from assistant.corpus.corpus import load_corpus
from assistant.runtime import quiet_libraries
from assistant.variants import load_variant, open_engine, variant_class


def spread_by_length(questions: list[str], n: int) -> list[str]:
    """n questions from the shortest to the longest, evenly spaced in length order."""
    ordered = sorted(set(questions), key=len)
    if len(ordered) <= n:
        return ordered
    return [ordered[round(i * (len(ordered) - 1) / (n - 1))] for i in range(n)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus")
    ap.add_argument("--questions", type=int, default=16)
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], help="override model.eval_dtype")
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    args = ap.parse_args()
    quiet_libraries()
    corpus = load_corpus(args.corpus)
    if args.dtype:
        corpus.config.model.eval_dtype = args.dtype
    corpus.config.generation.batch_size = max(corpus.config.generation.batch_size, args.questions)
    test = [q.question for q in corpus.questions("test")]
    questions = spread_by_length(test, args.questions - 1)
    # One compound question several times longer than the rest, so every other row is padded far.
    questions.append(" ".join(["Please answer all of these in turn:"] + spread_by_length(test, 12)))
    engine = open_engine(corpus)
    print(f"{corpus.name}: {len(questions)} test questions ({min(map(len, questions))}-"
          f"{max(map(len, questions))} characters), {engine.device} {str(engine.dtype).removeprefix('torch.')}, "
          f"batch-invariant {engine.batch_invariant} ({engine.plan()}; {torch.get_num_threads()} threads)")
    failed = 0
    for name in args.variants:
        cls = variant_class(name)
        if cls.needs_build and not cls.is_built(corpus):
            print(f"{name:>8}: not built, skipped")
            continue
        variant = load_variant(name, corpus, engine)
        t0 = time.perf_counter()
        alone = [variant.answer(q) for q in questions]
        generated = sum(not a.abstained_before_generation for a in alone)
        # All rows at once, then through a third as many rows: rows join as others leave, at every step.
        for rows in (len(questions), max(2, len(questions) // 3)):
            with engine.batched(rows):
                batched = variant.answer_many(questions)
            same = sum(a.text == b.text for a, b in zip(alone, batched))
            failed += same < len(questions)
            print(f"{name:>8}: {same}/{len(questions)} byte-identical alone vs a continuous batch of {rows} rows "
                  f"({generated} generated, {time.perf_counter() - t0:.0f} s)")
            for q, a, b in zip(questions, alone, batched):
                if a.text != b.text:
                    print(f"          {q[:60]!r}\n            alone: {a.text[:80]!r}\n            batch: {b.text[:80]!r}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
