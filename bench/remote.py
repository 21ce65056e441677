"""Answering through a server (`model.server`): one request at a time against `max_concurrency` at once.

    python bench/remote.py [CORPUS] [--questions 32] [--concurrency 8] [--variant prompted]

Starts `assistant serve CORPUS` in this process on a free loopback port (the stand-in for vLLM),
then answers the same N questions of the corpus through `RemoteEngine` twice, in one run: with
`max_concurrency: 1` (the baseline) and with `--concurrency`. Prints wall time and answers/s of
both, their ratio, the batch sizes the server decoded, and how many answers were identical (the
server decodes batch-invariantly, so all should be). Not a test: quote the ratio, measured side by
side, and say how loaded the machine was.
"""

from __future__ import annotations

import argparse
import time

from assistant.config import ServerSettings
from assistant.corpus.corpus import load_corpus
from assistant.model.remote import RemoteEngine
from assistant.serve.api import Limits, ServerThread, Service, create_app
from assistant.serve.lineup import load_lineup


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", nargs="?", default="tests/fixtures/tiny")
    ap.add_argument("--questions", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--variant", default="prompted")
    args = ap.parse_args()

    corpus = load_corpus(args.corpus)
    questions = [q.question for q in corpus.questions()][:args.questions]
    service = Service(corpus, load_lineup(corpus, [args.variant]), Limits(max_batch=args.concurrency))
    variant = service.lineup.variants[args.variant]
    prompts = [variant.prompt(q).messages for q in questions]
    with ServerThread(create_app(service)) as url:
        runs = {}
        for concurrency in (1, args.concurrency):
            engine = RemoteEngine(ServerSettings(base_url=f"{url}/v1", model=args.variant, max_concurrency=concurrency),
                                  variant.engine.tokenizer, max_new_tokens=corpus.config.generation.max_new_tokens)
            engine.generate(prompts[:1])  # warm-up
            before = len(service.scheduler.batches)
            t0 = time.perf_counter()
            gens = engine.generate(prompts)
            runs[concurrency] = (time.perf_counter() - t0, [g.text for g in gens], service.scheduler.batches[before:])
    (base_s, base_texts, _), (s, texts, batches) = runs[1], runs[args.concurrency]
    n = len(prompts)
    print(f"{n} questions of {corpus.name!r}, variant {args.variant}, model {corpus.config.model.name}")
    print(f"max_concurrency 1: {base_s:.1f} s, {n / base_s:.2f} answers/s")
    print(f"max_concurrency {args.concurrency}: {s:.1f} s, {n / s:.2f} answers/s, server batches {batches}")
    print(f"ratio {base_s / s:.2f}x; identical answers {sum(a == b for a, b in zip(base_texts, texts))}/{n}")


if __name__ == "__main__":
    main()
