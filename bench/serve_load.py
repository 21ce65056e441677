"""Load test of `assistant serve`: N concurrent clients against the same requests sent one by one.

    python bench/serve_load.py [CORPUS] [--clients 32] [--variants prompted rag] [--max-batch 16]

Starts `assistant serve CORPUS` on a free loopback port (127.0.0.1 only), sends the N chat requests
once to warm up (the prefix cache then holds their prompts' chunks for both measured runs), then
twice more through the official `openai` client: one after another, then all at once from N
threads. Every request must succeed (the queue is sized to hold them). Prints wall time,
requests/s and completion tokens/s of both runs, their ratio (the batching ratio), the concurrent
latency p50/p95 against a lone request's (the one-by-one run's p50), the decoding steps the server
ran, and how many answers were identical in both runs. Stops the server at the end and gives up
after --deadline seconds. Not a test: the numbers depend on the machine and its load; run it on an
idle machine, and quote the ratio, which is measured side by side.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(corpus: str, port: int, max_batch: int | None, queue: int, deadline: float) -> subprocess.Popen:
    import httpx

    cmd = [sys.executable, "-m", "assistant.cli", "serve", corpus, "--host", "127.0.0.1", "--port", str(port),
           "--max-queue", str(queue)] + (["--max-batch", str(max_batch)] if max_batch else [])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    env.pop("ASSISTANT_API_KEY", None)
    proc = subprocess.Popen(cmd, env=env)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with code {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.terminate()
    raise SystemExit("the server did not start in time")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", nargs="?", default="corpora/ecostride")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--variants", nargs="+", default=None, help="models to ask, round robin (default: all served)")
    ap.add_argument("--max-batch", type=int, default=None, help="server's --max-batch (default: its own)")
    ap.add_argument("--max-tokens", type=int, default=None, help="per request (default: the corpus's max_new_tokens)")
    ap.add_argument("--deadline", type=float, default=1800, help="seconds before the whole run gives up")
    args = ap.parse_args()

    import httpx
    import openai

    from assistant.corpus.corpus import load_corpus

    deadline = time.monotonic() + args.deadline
    corpus = load_corpus(args.corpus)
    questions = [q.question for q in corpus.questions("test", "answerable")][:args.clients]
    while len(questions) < args.clients:  # a small corpus: repeat its questions
        questions += questions[:args.clients - len(questions)]
    port = free_port()
    server = start_server(args.corpus, port, args.max_batch, max(64, 2 * args.clients), deadline)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0,
                               timeout=max(1.0, deadline - time.monotonic()))
        served = [m.id for m in client.models.list()]
        variants = [v for v in (args.variants or served) if v in served]
        if not variants:
            raise SystemExit(f"none of {args.variants} is served; the server has {served}")
        requests = [(variants[i % len(variants)], q) for i, q in enumerate(questions)]
        extra = {"max_tokens": args.max_tokens} if args.max_tokens else {}

        def ask(req):
            model, q = req
            t0 = time.perf_counter()
            r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": q}],
                                               temperature=0, **extra)
            return r.choices[0].message.content, r.usage.completion_tokens, time.perf_counter() - t0

        # Warm-up: every request once, so both measured runs find the same prompt chunks in the
        # server's prefix cache (else the second run would find the first one's, and the first none).
        for r in requests:
            ask(r)
        t0 = time.perf_counter()
        one_by_one = [ask(r) for r in requests]
        seq_s = time.perf_counter() - t0
        health = lambda: httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).json()  # noqa: E731
        h0 = health()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            together = list(pool.map(ask, requests))
        conc_s = time.perf_counter() - t0
        h1 = health()
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()

    n = len(requests)
    lat = sorted(x[2] for x in together)
    print(f"corpus {corpus.name}, models {', '.join(variants)}, {n} requests, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, {os.cpu_count()} CPUs")
    for name, res, secs in (("one by one", one_by_one, seq_s), (f"{args.clients} concurrent", together, conc_s)):
        tokens = sum(x[1] for x in res)
        print(f"{name:>14}: {secs:7.1f} s, {n / secs:5.2f} requests/s, {tokens / secs:6.1f} tokens/s "
              f"({tokens} completion tokens)")
    lone = sorted(x[2] for x in one_by_one)
    p50, p95 = lat[n // 2], lat[min(n - 1, round(0.95 * (n - 1)))]
    print(f"concurrent latency p50 {p50:.1f} s, p95 {p95:.1f} s, max {lat[-1]:.1f} s; a lone request p50 "
          f"{lone[n // 2]:.1f} s: concurrent p50 / lone p50 {p50 / lone[n // 2]:.2f}x; all {n} requests succeeded")
    print(f"concurrent run: {h1['batches'] - h0['batches']} decoding steps, {h1['rows_decoded'] - h0['rows_decoded']} "
          f"rows decoded (largest step so far {h1['largest_batch']} rows)")
    print(f"batching ratio (one-by-one time / concurrent time): {seq_s / conc_s:.2f}x")
    same = sum(a[0] == b[0] for a, b in zip(one_by_one, together))
    print(f"identical answers in both runs: {same}/{n}")


if __name__ == "__main__":
    main()
