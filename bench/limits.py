"""How fast could this CPU go? The default model's linear layers alone, as a bound for the engine.

    python bench/limits.py [--threads 1] [--seconds 2] [--dtypes float32 bfloat16]

Runs every linear layer of the default model (its own weights, the tied LM head included) on
random activations, with nothing else: no attention, norms, sampling or Python bookkeeping. For a
decoding step of M rows that is the least time a step can take, so M / time bounds the engine's
tokens/s at batch M; for a prompt of T tokens (the LM head left out, prefill only needs its last
row) it bounds prompt processing. Prints ms per step, GFLOPS, weight bytes read per second and the
bound, to set beside `bench/generation.py`'s engine figures. Not a test: quote medians of runs.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from assistant.config import ModelSettings  # noqa: E402
from assistant.model.loading import cpu_supports_bf16, load_model  # noqa: E402
from assistant.runtime import cpu_name, quiet_libraries  # noqa: E402


def timed(fn, seconds: float) -> float:
    """Seconds per call of fn, after one warm-up call, over at least `seconds`."""
    fn()
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        fn()
        calls += 1
    return (time.perf_counter() - start) / calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the evaluation's workers use 1)")
    ap.add_argument("--seconds", type=float, default=2.0, help="time each measurement at least this long")
    ap.add_argument("--dtypes", nargs="+", choices=["float32", "bfloat16"],
                    default=["float32", "bfloat16"] if cpu_supports_bf16() else ["float32"])
    ap.add_argument("--rows", nargs="+", type=int, default=[1, 4, 16, 64], help="decoding rows per step")
    ap.add_argument("--prompt-tokens", type=int, default=5120, help="prefill: padded tokens of one batch")
    args = ap.parse_args()
    quiet_libraries()
    torch.set_num_threads(args.threads)
    print(f"{cpu_name()}, {torch.backends.cpu.get_cpu_capability()}, {args.threads} thread(s); "
          "the default model's linear layers only")
    print(f"{'dtype':>9} {'work':>22} {'ms':>8} {'GFLOPS':>7} {'GB/s':>6} {'bound':>12}")
    for name in args.dtypes:
        dtype = getattr(torch, name)
        model, _ = load_model(ModelSettings(dtype=name))
        layers = [m.weight.detach().to(dtype) for m in model.modules() if isinstance(m, torch.nn.Linear)]
        head = model.get_output_embeddings().weight
        body = [w for w in layers if w.data_ptr() != head.data_ptr()]
        for rows in args.rows:
            x = {w.shape[1]: torch.randn(rows, w.shape[1], dtype=dtype) for w in layers}
            s = timed(lambda: [torch.nn.functional.linear(x[w.shape[1]], w) for w in layers], args.seconds)
            flops, nbytes = sum(2 * rows * w.numel() for w in layers), sum(w.numel() * w.element_size() for w in layers)
            print(f"{name:>9} {f'decode step, {rows} rows':>22} {1e3 * s:8.1f} {flops / s / 1e9:7.1f} "
                  f"{nbytes / s / 1e9:6.1f} {rows / s:7.0f} tok/s", flush=True)
        t = args.prompt_tokens
        x = {w.shape[1]: torch.randn(t, w.shape[1], dtype=dtype) for w in body}
        s = timed(lambda: [torch.nn.functional.linear(x[w.shape[1]], w) for w in body], args.seconds)
        flops = sum(2 * t * w.numel() for w in body)
        print(f"{name:>9} {f'prefill, {t} tokens':>22} {1e3 * s:8.1f} {flops / s / 1e9:7.1f} {'':>6} "
              f"{t / s:7.0f} tok/s", flush=True)


if __name__ == "__main__":
    main()
