"""Soak test of `assistant serve`: RSS against requests, and tokens per second over time.

    python bench/serve_soak.py [CORPUS] [--requests 600] [--threads 8] [--every 50] [--tracemalloc]

Without CORPUS, a copy of the tests' tiny corpus (tests/tiny_model.py: a tiny random model, offline, seconds to
build) is built in a temporary folder with `prompted` and `rag`. The server runs as `assistant serve`
in a child process bound to 127.0.0.1 (its RSS read from /proc), unless --tracemalloc, which runs it
in this process and prints, at the end, the source lines whose allocations grew most between the
first sample and the last (the tool that finds a leak). Requests go round robin over the variants
from --threads threads, every --stream-th of them streaming (default: a third), each asking for
--max-tokens tokens. Every --every requests a line: requests done, RSS in MB, the growth since the
first sample, completion tokens per second over the interval. At the end: the growth per request
over the second half (a least-squares slope, in KB per request): flat memory reads near 0.

Not a test (tests/test_server.py asserts a bound on the same measure); the numbers depend on the
machine and its load.
"""

from __future__ import annotations

import argparse
import itertools
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # the package, and the tests' tiny corpus

QUESTIONS = ["How long do I have to return a bike?", "What is the return window for bikes?",
             "Who pays for return shipping?", "When is the shop open?", "Do you service e-bikes?",
             "Can I return a helmet?", "Is there a restocking fee?", "How do I book a repair?"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Resident set size of a process, from /proc (Linux)."""
    return proc_status(pid)[0]


def proc_status(pid: int) -> tuple[float, int]:
    """(RSS in MB, threads) of a process, from /proc (Linux)."""
    rss = threads = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return rss, threads


def tiny_corpus(folder: Path) -> Path:
    """The tests' tiny corpus, copied and built (prompted needs nothing; rag gets its index)."""
    from assistant.corpus.corpus import load_corpus
    from assistant.variants.rag import RagVariant
    from tiny_model import copy_tiny_corpus

    root = copy_tiny_corpus(folder / "tiny", runs_dir=Path("runs"))
    RagVariant.build(load_corpus(root))
    return root


def slope(xs: list[float], ys: list[float]) -> float:
    n = len(xs)
    if n < 2:
        return float("nan")
    mx, my = sum(xs) / n, sum(ys) / n
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else float("nan")


def soak(url: str, key: str, variants: list[str], requests: int, threads: int, stream_every: int,
         max_tokens: int, every: int, rss, deadline: float, distinct: bool = False) -> list[tuple[int, float, float]]:
    """Send the requests; return (requests done, RSS MB, tokens/s of the interval) samples."""
    import openai

    client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=2, timeout=120)
    lock = threading.Lock()
    done, tokens = 0, 0
    samples: list[tuple[int, float, float]] = []
    last = [time.monotonic(), 0]
    counter = itertools.count()

    def one(_):
        nonlocal done, tokens
        if time.monotonic() > deadline:
            return
        i = next(counter)
        question = QUESTIONS[i % len(QUESTIONS)] + (f" (#{i})" if distinct else "")
        kwargs = dict(model=variants[i % len(variants)], max_tokens=max_tokens,
                      messages=[{"role": "user", "content": question}])
        if stream_every and i % stream_every == 0:
            got = 0
            for chunk in client.chat.completions.create(stream=True, **kwargs):
                if chunk.usage:
                    got = chunk.usage.completion_tokens
        else:
            got = client.chat.completions.create(**kwargs).usage.completion_tokens
        with lock:
            done += 1
            tokens += got
            if done % every == 0:
                now = time.monotonic()
                rate = (tokens - last[1]) / max(now - last[0], 1e-9)
                last[:] = [now, tokens]
                mb, threads_now = rss()
                samples.append((done, mb, rate))
                first = samples[0][1]
                print(f"{done:6d} requests  RSS {mb:8.1f} MB  ({mb - first:+7.1f})  {rate:7.1f} tokens/s  "
                      f"{threads_now} threads", flush=True)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(requests)))
    return samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", nargs="?", default=None, help="a built corpus (default: the tiny test corpus)")
    ap.add_argument("--requests", type=int, default=600)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--variants", nargs="+", default=["prompted", "rag"])
    ap.add_argument("--stream", type=int, default=3, help="every Nth request streams (0: none)")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--distinct", action="store_true", help="every question different (a numbered suffix)")
    ap.add_argument("--every", type=int, default=50, help="requests between two samples")
    ap.add_argument("--tracemalloc", action="store_true", help="serve in this process and print what grew")
    ap.add_argument("--deadline", type=float, default=1800, help="seconds before the run stops sending")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    deadline = time.monotonic() + args.deadline
    key = "soak-key"

    with tempfile.TemporaryDirectory(prefix="serve-soak-") as tmp:
        corpus_root = Path(args.corpus) if args.corpus else tiny_corpus(Path(tmp))
        if args.tracemalloc:
            import gc
            import tracemalloc

            from assistant.corpus.corpus import load_corpus
            from assistant.serve.api import ServerThread, create_app, open_service

            service = open_service(load_corpus(corpus_root))
            with ServerThread(create_app(service, api_key=key)) as url:
                soak(url, key, args.variants, args.every, args.threads, args.stream, args.max_tokens,
                     args.every, lambda: proc_status(os.getpid()), deadline, args.distinct)  # warm-up
                gc.collect()
                tracemalloc.start(12)
                before = tracemalloc.take_snapshot()
                samples = soak(url, key, args.variants, args.requests, args.threads, args.stream, args.max_tokens,
                               args.every, lambda: proc_status(os.getpid()), deadline, args.distinct)
                gc.collect()
                after = tracemalloc.take_snapshot()
            print("\nlargest growth by source line (tracemalloc, after gc):")
            for stat in after.compare_to(before, "traceback")[:12]:
                print(f"  {stat.size_diff / 1024:+10.1f} KB  {stat.count_diff:+7d} blocks")
                for line in stat.traceback.format()[-8:]:
                    print("      " + line)
        else:
            port = free_port()
            env = {**os.environ, "PYTHONPATH": str(ROOT), "ASSISTANT_API_KEY": key}
            proc = subprocess.Popen([sys.executable, "-m", "assistant.cli", "serve", str(corpus_root),
                                     "--host", "127.0.0.1", "--port", str(port), "--max-queue", "256"], env=env)
            try:
                import httpx

                while True:
                    if proc.poll() is not None:
                        raise SystemExit(f"the server exited with code {proc.returncode}")
                    try:
                        if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if time.monotonic() > deadline:
                        raise SystemExit("the server did not start in time")
                    time.sleep(0.3)
                samples = soak(f"http://127.0.0.1:{port}", key, args.variants, args.requests, args.threads,
                               args.stream, args.max_tokens, args.every, lambda: proc_status(proc.pid), deadline,
                               args.distinct)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    half = samples[len(samples) // 2:]
    per_request = slope([s[0] for s in half], [s[1] for s in half]) * 1024
    print(f"\nsecond half: {per_request:+.1f} KB per request (least squares over {len(half)} samples); "
          f"tokens/s median {sorted(s[2] for s in samples)[len(samples) // 2]:.1f}" if samples else "no samples")


if __name__ == "__main__":
    main()
