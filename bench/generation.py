"""Generation throughput: Hugging Face `generate` (the baseline) against the project's engine.

    python bench/generation.py [--model smollm2-135m-instruct] [--questions 64] [--batches 1 16 64]
                               [--dtypes float32 bfloat16] [--plain] [--max-new-tokens 64] [--repeats 1]

For each dtype, in one run and on the same prompts: `model.generate` with its default settings
(greedy, plain SDPA, left-padded batches, same max_new_tokens and dtype), then the engine
(batch-invariant, the evaluation's decoding), at each batch size; prints tokens/s and closes with
the ratios engine / HF generate per batch size, and how many answers were the same text. `--plain`
adds the engine with batch invariance switched off (what invariance costs); `--batch N` (the
old option) measures batch 1 and N. Batch 1 is timed on an eighth of the questions (it is slow).
bf16 is only measured where the CPU has native bf16 (or on CUDA), unless named in --dtypes. Not a
test: numbers depend on the machine and its load, so run it twice and quote the median.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from assistant.config import GenerationSettings, ModelSettings  # noqa: E402
from assistant.model.engine import Engine, Messages  # noqa: E402
from assistant.model.loading import cpu_supports_bf16, load_model  # noqa: E402
from assistant.runtime import cpu_name, quiet_libraries  # noqa: E402

QUESTIONS = [
    "What is the capital of France?", "How many legs does a spider have?",
    "Name three colours of the rainbow.", "What do bees make?",
    "Why is the sky blue? Answer in one sentence.", "What is the largest planet in the solar system?",
    "How many days are in a leap year?", "What is water made of?",
]

Decode = Callable[[list[Messages], int], list[tuple[str, int]]]  # (text, completion tokens) per question


def hf_generate(engine: Engine, max_new: int) -> Decode:
    """The baseline: `model.generate` with default settings on the same length-sorted, left-padded
    batches the engine forms (no invariance, no filling, no early exit of finished rows)."""
    model, tok = engine.model, engine.tokenizer
    pad, stop = tok.pad_token_id, engine._stop_ids()

    @torch.inference_mode()
    def decode(convs: list[Messages], batch: int) -> list[tuple[str, int]]:
        ids = [tok(engine.render(m), add_special_tokens=False)["input_ids"] for m in convs]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]), reverse=True)
        out: list[tuple[str, int]] = [("", 0)] * len(ids)
        for start in range(0, len(order), batch):
            rows = [ids[i] for i in order[start:start + batch]]
            width = max(map(len, rows))
            input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=model.device)
            mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=model.device)
            new = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new,
                                 do_sample=False, pad_token_id=pad)[:, width:]
            for i, row in zip(order[start:start + batch], new.tolist()):
                k = next((k for k, t in enumerate(row) if t in stop), len(row))
                out[i] = (tok.decode(row[:k], skip_special_tokens=True).strip(), k)
        return out

    return decode


def engine_generate(engine: Engine) -> Decode:
    def decode(convs: list[Messages], batch: int) -> list[tuple[str, int]]:
        return [(g.text, g.completion_tokens) for g in engine.generate(convs, batch_size=batch)]
    return decode


def measure(decode: Decode, questions: list[str], batch: int, repeats: int) -> tuple[float, list[str]]:
    """Median tokens/s over `repeats` runs (after a short warm-up) and the answers."""
    convs = [[{"role": "user", "content": q}] for q in questions]
    decode(convs[: min(batch, 4)], batch)  # warm-up
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = decode(convs, batch)
        rates.append(sum(k for _, k in out) / (time.perf_counter() - t0))
    return statistics.median(rates), [text for text, _ in out]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=ModelSettings().name)
    ap.add_argument("--questions", type=int, default=64)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--batch", type=int, help="measure batch 1 and this batch size only (overrides --batches)")
    ap.add_argument("--max-new-tokens", type=int, default=GenerationSettings().max_new_tokens)
    ap.add_argument("--repeats", type=int, default=1)
    native_bf16 = cpu_supports_bf16() or torch.cuda.is_available()
    ap.add_argument("--dtypes", nargs="+", choices=["float32", "bfloat16"],
                    default=["float32", "bfloat16"] if native_bf16 else ["float32"])
    ap.add_argument("--plain", action="store_true", help="also measure the engine with batch invariance off")
    args = ap.parse_args()
    quiet_libraries()
    batches = sorted({1, args.batch}) if args.batch else args.batches

    # Every prompt distinct: the engine decodes a repeated prompt once, which is not what is measured here.
    questions = [f"{QUESTIONS[i % len(QUESTIONS)]} ({i // len(QUESTIONS) + 1})" for i in range(args.questions)]
    print(f"model {args.model}, {cpu_name()} ({torch.backends.cpu.get_cpu_capability()}), "
          f"{torch.get_num_threads()} threads, {len(questions)} questions, max_new_tokens {args.max_new_tokens}, "
          f"median of {args.repeats}")
    print(f"{'dtype':>9} {'decoder':>18} " + " ".join(f"{f'batch {b}':>9}" for b in batches) + "  tokens/s")
    rates: dict[tuple[str, str], dict[int, float]] = {}
    answers: dict[tuple[str, str], dict[int, list[str]]] = {}
    for dtype in args.dtypes:
        model, tok = load_model(ModelSettings(name=args.model, dtype=dtype))
        decoders = [("HF generate", None), ("engine", True)] + ([("engine, plain", False)] if args.plain else [])
        for name, invariant in decoders:
            model.set_attn_implementation("sdpa")  # each engine sets its own below
            # HF generate first, on the dense weights; the first engine packs them (kernels.py).
            engine = Engine(model, tok, max_new_tokens=args.max_new_tokens, batch_invariant=bool(invariant),
                            pack=invariant is not None)
            decode = hf_generate(engine, args.max_new_tokens) if invariant is None else engine_generate(engine)
            row, texts = {}, {}
            for b in batches:
                qs = questions[: max(4, len(questions) // 8)] if b == 1 else questions
                row[b], texts[b] = measure(decode, qs, b, args.repeats)
            rates[dtype, name], answers[dtype, name] = row, texts
            print(f"{dtype:>9} {name:>18} " + " ".join(f"{row[b]:>9.1f}" for b in batches), flush=True)
    for dtype in args.dtypes:
        base = rates[dtype, "HF generate"]
        for name in ("engine", "engine, plain"):
            if (dtype, name) not in rates:
                continue
            ratios = ", ".join(f"batch {b} {rates[dtype, name][b] / base[b]:.2f}x" for b in batches)
            same = sum(sum(a == h for a, h in zip(answers[dtype, name][b], answers[dtype, "HF generate"][b]))
                       for b in batches)
            total = sum(len(answers[dtype, name][b]) for b in batches)
            print(f"ratio {name} / HF generate ({dtype}): {ratios}; same text as HF {same}/{total}")
    if ("float32", "engine") in rates and ("bfloat16", "engine") in rates:
        f, b16 = rates["float32", "engine"], rates["bfloat16", "engine"]
        print("ratio engine bf16 / fp32: " + ", ".join(f"batch {b} {b16[b] / f[b]:.2f}x" for b in batches))


if __name__ == "__main__":
    main()
