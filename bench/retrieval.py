"""Retrieval benchmark: index build rate, query latency, approximate-index recall.

    python bench/retrieval.py [--corpus corpora/ecostride] [--synthetic 100000] [--queries 200]

Part 1, the demo corpus: chunking + embedding + indexing rate (chunks/s) and per-query latency
p50/p95 (embedding one query + FAISS search) for the exact (flat), HNSW and IVF indexes.

Part 2, a synthetic corpus of N chunks: embedding 100,000 real chunks would take many minutes on
a small CPU, so the vectors are synthetic (clustered unit vectors, like real embeddings, which
are far from uniform) and the embedding cost is measured on a sample of real-sized texts and
extrapolated. For each index type: build time, search latency p50/p95 (one query at a time), and
recall@10 of the approximate indexes against the exact one.

Not a test: numbers depend on the machine and on its load; quote medians and ratios.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

from assistant.corpus.chunking import chunk_documents, token_counter  # noqa: E402
from assistant.config import RetrievalSettings  # noqa: E402
from assistant.corpus.corpus import load_corpus  # noqa: E402
from assistant.variants.retrieval import embed, embed_queries, load_embedder, make_index, tune_index  # noqa: E402

KINDS = ("flat", "hnsw", "ivf")


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q))


def row(*cells) -> None:
    print("  ".join(f"{c:>12}" if i else f"{c:<24}" for i, c in enumerate(cells)))


def time_queries(embedder, questions: list[str]) -> tuple[np.ndarray, list[float], list[float]]:
    """Embed each question alone, as a chat user sends them: vectors, wall and CPU seconds each."""
    vecs, wall, cpu = [], [], []
    for q in questions:
        t0, c0 = time.perf_counter(), time.thread_time()
        vecs.append(embed_queries(embedder, [q])[0])
        wall.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    return np.stack(vecs), wall, cpu


def time_search(index, vecs: np.ndarray, k: int) -> tuple[np.ndarray, list[float]]:
    ids, lat = [], []
    for v in vecs:
        t0 = time.perf_counter()
        _, i = index.search(v[None], k)
        lat.append(time.perf_counter() - t0)
        ids.append(i[0])
    return np.array(ids), lat


def demo_corpus(path: str, n_queries: int, settings: RetrievalSettings) -> list[float]:
    """Build rate and end-to-end query latency on a real corpus; returns the query-embedding wall times."""
    corpus = load_corpus(path)
    embedder = load_embedder(settings.embedder)
    embed(embedder, ["warm-up"])
    t0 = time.perf_counter()
    chunks = chunk_documents(corpus.documents, corpus.config.chunking, token_counter(embedder.tokenizer))
    chunk_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    vectors = embed(embedder, [c.embedding_text() for c in chunks])
    embed_s = time.perf_counter() - t0
    questions = [q.question for q in corpus.qa][:n_queries]
    qvecs, emb_wall, emb_cpu = time_queries(embedder, questions)
    print(f"\n# demo corpus {corpus.name}: {len(corpus.documents)} documents, {len(chunks)} chunks, "
          f"{len(questions)} queries, embedder {settings.embedder}")
    print(f"chunking {len(chunks) / chunk_s:,.0f} chunks/s, embedding {len(chunks) / embed_s:,.1f} chunks/s; "
          f"query embedding p50 {1e3 * pct(emb_wall, 50):.1f} ms wall, {1e3 * pct(emb_cpu, 50):.1f} ms CPU")
    row("index", "build chunks/s", "query p50 ms", "query p95 ms", "search p50 ms")
    for kind in KINDS:
        t0 = time.perf_counter()
        index = make_index(vectors, kind, settings)
        index_s = time.perf_counter() - t0
        _, search = time_search(index, qvecs, settings.top_k)
        total = [e + s for e, s in zip(emb_wall, search)]  # embedding + search, per query
        rate = len(chunks) / (chunk_s + embed_s + index_s)
        row(kind, f"{rate:,.1f}", f"{1e3 * pct(total, 50):.2f}", f"{1e3 * pct(total, 95):.2f}",
            f"{1e3 * pct(search, 50):.3f}")
    return emb_wall


def synthetic_vectors(n: int, dim: int, clusters: int, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors around random topic centres: neighbours exist, as in real embedding spaces."""
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)] + 0.7 * rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def synthetic(n: int, n_queries: int, settings: RetrievalSettings, emb_wall: list[float], sample: int) -> None:
    rng = np.random.default_rng(0)
    embedder = load_embedder(settings.embedder)
    # Real embedding cost on chunk-sized texts (~60 words), extrapolated to n chunks.
    words = "shoe return refund warranty sole recycled order store delivery size".split()
    texts = [" ".join(rng.choice(words, 60)) for _ in range(sample)]
    t0 = time.perf_counter()
    dim = embed(embedder, texts).shape[1]
    embed_rate = sample / (time.perf_counter() - t0)
    x = synthetic_vectors(n, dim, clusters=max(16, n // 200), rng=rng)
    # Queries: perturbed corpus vectors (a question close to, not equal to, some passage).
    q = x[rng.integers(0, n, n_queries)] + 0.05 * rng.standard_normal((n_queries, dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    print(f"\n# synthetic corpus: {n:,} chunks x {dim} dims, {n_queries} queries, recall@10 vs exact")
    print(f"embedding (measured on {sample} real-sized texts): {embed_rate:,.1f} chunks/s -> "
          f"{n / embed_rate / 60:,.1f} min to embed {n:,} chunks")
    row("index", "index s", "build chunks/s", "search p50 ms", "search p95 ms", "query p50 ms", "recall@10")
    exact_ids = None
    for kind in KINDS:
        t0 = time.perf_counter()
        index = make_index(x, kind, settings)
        index_s = time.perf_counter() - t0
        build_rate = n / (n / embed_rate + index_s)  # embedding + indexing, per chunk
        # The search-time knob of each approximate index, around the configured value.
        sweep = {"flat": [("", None)],
                 "hnsw": [(f" ef={e}", e) for e in sorted({32, settings.hnsw_ef_search, 256})],
                 "ivf": [(f" nprobe={p}", p) for p in sorted({4, settings.ivf_nprobe, 64})]}[kind]
        for label, knob in sweep:
            tune_index(index, settings.model_copy(update={"hnsw_ef_search": knob or 1, "ivf_nprobe": knob or 1}))
            ids, lat = time_search(index, q, 10)
            if kind == "flat":
                exact_ids = ids
            recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, exact_ids)])
            total = [e + s for e, s in zip(emb_wall, lat)]  # a real query's embedding + this search
            row(kind + label, f"{index_s:.2f}", f"{build_rate:,.1f}", f"{1e3 * pct(lat, 50):.2f}",
                f"{1e3 * pct(lat, 95):.2f}", f"{1e3 * pct(total, 50):.2f}", f"{recall:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default="corpora/ecostride")
    ap.add_argument("--synthetic", type=int, default=100_000, help="chunks in the synthetic corpus (0: skip)")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--embed-sample", type=int, default=256, help="real texts embedded to time embedding")
    args = ap.parse_args()
    if not Path(args.corpus).is_dir():
        sys.exit(f"corpus folder {args.corpus} not found")
    settings = load_corpus(args.corpus).config.retrieval
    print(f"settings: hnsw_m={settings.hnsw_m} ef_search={settings.hnsw_ef_search} "
          f"ivf_nlist={settings.ivf_nlist or 'auto'} nprobe={settings.ivf_nprobe}; "
          f"torch threads={__import__('torch').get_num_threads()}")
    emb_wall = demo_corpus(args.corpus, args.queries, settings)
    if args.synthetic:
        synthetic(args.synthetic, args.queries, settings, emb_wall, args.embed_sample)


if __name__ == "__main__":
    main()
