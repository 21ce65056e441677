"""The default model, alone against inside a padded batch of 16, on this machine: no built corpus needed.

    python bench/padding_check.py [--dtypes float32 bfloat16] [--max-new-tokens 48] [--base-only]

The check of tests/test_app.py's real-model padding test, as a script for machines where the test
suite cannot run (a lent machine: bench/device_check.sh): one question and 15 others of very
different lengths, each answered alone and inside the padded batch of 16, for the base model and a
random LoRA adapter, in each dtype. Prints the engine's decoding plan (`Engine.plan`) and how many
of the 16 answers are byte-identical; exit code 1 when any differs. Run it with OMP_NUM_THREADS=1
and =2 to see both thread counts (the plan depends on them).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import torch

from assistant.config import ModelSettings
from assistant.model.engine import Engine
from assistant.model.loading import cpu_supports_bf16, load_model
from assistant.runtime import quiet_libraries

QUESTION = "What is the capital of France?"
OTHERS = ["Hi", "Why?", "Name a colour.", "Tell me, in detail and with every date you know, the whole history "
          "of the bicycle from the draisine of 1817 to today's carbon frames, and why it matters. " * 2]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    native = cpu_supports_bf16() or torch.cuda.is_available()
    ap.add_argument("--dtypes", nargs="+", choices=["float32", "bfloat16"],
                    default=["float32", "bfloat16"] if native else ["float32"])
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--base-only", action="store_true", help="skip the random LoRA adapter")
    args = ap.parse_args()
    quiet_libraries()
    batch = [QUESTION] + [OTHERS[i % len(OTHERS)] + " Thanks." * (i % 4) + f" ({i})" for i in range(15)]
    convs = [[{"role": "user", "content": x}] for x in batch]
    failed = 0
    for dtype in args.dtypes:
        t0 = time.perf_counter()
        engine = Engine(*load_model(ModelSettings(dtype=dtype, eval_dtype=dtype), evaluation=True),
                        max_new_tokens=args.max_new_tokens, batch_size=16)
        adapters: tuple[str | None, ...] = (None,)
        if not args.base_only:
            from peft import LoraConfig, get_peft_model

            base, _ = load_model(ModelSettings(dtype=dtype))
            with tempfile.TemporaryDirectory() as d:
                lora = LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)
                get_peft_model(base, lora).save_pretrained(d)
                engine.add_adapter("random-lora", d)
            adapters += ("random-lora",)
        print(f"{dtype}, {engine.device}, {torch.get_num_threads()} threads: {engine.plan()}", flush=True)
        for adapter in adapters:
            together = engine.generate(convs, adapter=adapter)
            same = sum(engine.generate(convs[i:i + 1], adapter=adapter)[0].text == together[i].text for i in range(16))
            failed += same < 16
            print(f"  {adapter or 'base model':>12}: {same}/16 byte-identical alone and in the padded batch "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
