"""Dense retrieval: sentence-transformers embeddings in a FAISS index, built once per corpus.

The index lives in `runs/<corpus>/rag/`: `index.faiss`, `chunks.jsonl`, `build.json` and, written
last, `manifest.json` holding the fingerprint of the documents and of the settings the index
depends on. The folder is assembled under a temporary name and renamed into place, so a crash
leaves either the previous index or none, never half of one.

Embeddings are L2-normalised, so inner product is cosine similarity: scores lie in [-1, 1] and the
abstention threshold (`retrieval.min_score`) means the same for every index type.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from assistant.corpus.chunking import Chunk, chunk_documents, token_counter
from assistant.config import RetrievalSettings
from assistant.corpus.corpus import Corpus
from assistant.corpus.runs import BUILD_FILE, CHUNKS_FILE, INDEX_FILE, MANIFEST_FILE
from assistant.errors import NotBuilt
from assistant.model.loading import embed, load_embedder  # the one loader and embedder; re-exported for callers
from assistant.storage import atomic_dir, read_json
from assistant.runtime import peak_memory_mb, report_card, torch_threads

__all__ = ["Chunk", "Retriever", "build_index", "is_index_fresh", "index_fingerprint",
           "load_embedder", "embed", "embed_queries", "gold_rank", "retrieval_metrics",
           "evaluate_retrieval", "report_retrieval"]

FORMAT = 1  # bump when the files' layout or the chunk text changes meaning
QUERY_CACHE = 4096  # query embeddings kept per loaded index
LARGE_INDEX = 5000  # chunks above which a build says it will take a while (the 5 MB document: 14,067)
QUERY_BATCH_THREADED = 8  # query batches up to this size are embedded on one thread
# Settings that change the index itself; top_k, min_score and search-time knobs do not.
INDEX_SETTINGS = {"embedder", "index", "approximate_above", "hnsw_m", "ivf_nlist"}


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def index_fingerprint(corpus: Corpus) -> str:
    """Hash of the documents and of the chunking and index settings (not of the QA set)."""
    h = corpus.hash_documents(hashlib.sha256(f"format={FORMAT}\0".encode()))
    cfg = corpus.config
    h.update(cfg.chunking.model_dump_json().encode())
    h.update(cfg.retrieval.model_dump_json(include=INDEX_SETTINGS).encode())
    return h.hexdigest()[:16]


def is_index_fresh(corpus: Corpus) -> bool:
    """True when a complete index built from the current documents and settings is on disk."""
    folder = corpus.runs.index
    manifest = read_json(folder / MANIFEST_FILE)
    return (manifest is not None and manifest.get("fingerprint") == index_fingerprint(corpus)
            and (folder / INDEX_FILE).is_file() and (folder / CHUNKS_FILE).is_file())


@dataclass
class Source:
    """A retrieved passage, as shown with an answer."""

    path: str
    heading: str
    text: str
    score: float
    rank: int = 0
    page: int | None = None  # PDFs: the page the passage is on, cited as "docs/manual.pdf p. 3"

    def citation(self) -> str:
        return f"{self.path} p. {self.page}" if self.page else self.path


# -- embeddings -------------------------------------------------------------------------------
def embed_queries(embedder, queries: Sequence[str]) -> np.ndarray:
    if len(queries) > QUERY_BATCH_THREADED:
        return embed(embedder, queries)
    # A few short queries are too little work to split across threads, and on a busy CPU the
    # threads wait on each other at every op: measured here under load, one query took 700 ms
    # with 2 threads and 23 ms with 1.
    with torch_threads(1):
        return embed(embedder, queries)


# -- FAISS ------------------------------------------------------------------------------------
def index_kind(settings: RetrievalSettings, n: int) -> str:
    if settings.index != "auto":
        return settings.index
    return "hnsw" if n > settings.approximate_above else "flat"


def make_index(vectors: np.ndarray, kind: str, settings: RetrievalSettings):
    """A FAISS inner-product index over `vectors` (exact flat, HNSW graph or IVF cells)."""
    import faiss

    n, dim = vectors.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    elif kind == "ivf":
        # ~4*sqrt(n) cells, but at least 39 training points per cell (FAISS's own minimum).
        nlist = settings.ivf_nlist or int(4 * np.sqrt(n))
        nlist = max(1, min(nlist, n // 39))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
    else:
        raise ValueError(f"unknown index type {kind!r}")
    index.add(vectors)
    tune_index(index, settings)
    return index


def tune_index(index, settings: RetrievalSettings) -> None:
    """Apply the search-time knobs (they are not stored in the file)."""
    import faiss

    if hasattr(index, "hnsw"):
        index.hnsw.efSearch = settings.hnsw_ef_search
    ivf = faiss.try_extract_index_ivf(index) if hasattr(faiss, "try_extract_index_ivf") else None
    if ivf is not None:
        ivf.nprobe = min(settings.ivf_nprobe, ivf.nlist)


# -- build ------------------------------------------------------------------------------------
def build_index(corpus: Corpus, force: bool = False) -> dict:
    """Chunk, embed and index the corpus under runs/<corpus>/rag/ unless an up-to-date index exists.

    Returns the content of build.json (with "reused": True when nothing had to be done).
    """
    target = corpus.runs.index
    if not force and is_index_fresh(corpus):
        return {**(read_json(target / BUILD_FILE) or {}), "reused": True}
    cfg = corpus.config
    fingerprint = index_fingerprint(corpus)
    t0 = time.perf_counter()
    embedder = load_embedder(cfg.retrieval.embedder, cfg.model.device)
    chunks = chunk_documents(corpus.documents, cfg.chunking, token_counter(embedder.tokenizer))
    if not chunks:
        raise NotBuilt(f"corpus {corpus.name!r} has no text to index; add documents under {corpus.root / 'docs'}")
    max_len = embedder.max_seq_length or 512
    if cfg.chunking.chunk_tokens + 32 > max_len:
        _log(f"warning: chunk_tokens={cfg.chunking.chunk_tokens} is near the embedder's limit of {max_len} "
             "tokens; longer chunks are truncated when embedded")
    if len(chunks) > LARGE_INDEX:
        _log(f"warning: {len(chunks)} chunks to embed; on a CPU this takes minutes, and the index grows "
             "with them (build.json records the rate: chunks_per_s)")
    _log(f"rag: embedding {len(chunks)} chunks from {len(corpus.documents)} documents "
         f"with {cfg.retrieval.embedder}")
    t_embed = time.perf_counter()
    vectors = embed(embedder, [c.embedding_text() for c in chunks], progress=True)
    embed_s = time.perf_counter() - t_embed
    kind = index_kind(cfg.retrieval, len(chunks))
    t_index = time.perf_counter()
    index = make_index(vectors, kind, cfg.retrieval)
    index_s = time.perf_counter() - t_index

    import faiss

    report: dict = {}

    def write(tmp: Path) -> None:
        faiss.write_index(index, str(tmp / INDEX_FILE))
        with open(tmp / CHUNKS_FILE, "w", encoding="utf-8") as f:
            for c in chunks:
                f.write(json.dumps({"id": c.id, "path": c.path, "heading": c.heading, "text": c.text,
                                    **({"page": c.page} if c.page else {})}, ensure_ascii=False) + "\n")
        build_s = time.perf_counter() - t0
        report.update({
            "fingerprint": fingerprint, "build_time_s": round(build_s, 3),
            "artifact_bytes": sum(p.stat().st_size for p in tmp.iterdir()),
            "peak_memory_mb": peak_memory_mb(), "chunks": len(chunks), "documents": len(corpus.documents),
            "index_type": kind, "embedder": cfg.retrieval.embedder, "dim": int(vectors.shape[1]),
            "embed_time_s": round(embed_s, 3), "index_time_s": round(index_s, 4),
            "chunks_per_s": round(len(chunks) / max(embed_s + index_s, 1e-9), 1),
            "environment": report_card(embedder_device=str(embedder.device)),
        })
        (tmp / BUILD_FILE).write_text(json.dumps(report, indent=2))
        manifest = {"fingerprint": fingerprint, "format": FORMAT, "index_type": kind, "chunks": len(chunks),
                    "dim": int(vectors.shape[1]), "embedder": cfg.retrieval.embedder,
                    "chunking": cfg.chunking.model_dump()}
        # The manifest is written last: its presence marks the folder complete.
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))

    atomic_dir(target, write, replace=True)  # the old index is swapped out only once the new one is whole
    _log(f"rag: {len(chunks)} chunks, {kind} index, {report['chunks_per_s']:.0f} chunks/s, "
         f"built in {report['build_time_s']:.1f} s -> {target}")
    return report


# -- search -----------------------------------------------------------------------------------
class Retriever:
    """A loaded index: `search(query)` returns the top passages as Sources (rank 1 = best)."""

    def __init__(self, index, chunks: list[Chunk], embedder, settings: RetrievalSettings, manifest: dict):
        self.index = index
        self.chunks = chunks
        self.embedder = embedder
        self.settings = settings
        self.manifest = manifest
        self._cache: dict[str, np.ndarray] = {}  # query -> vector, oldest first
        self._lock = threading.Lock()

    @classmethod
    def load(cls, corpus: Corpus) -> Retriever:
        """The corpus's index, loaded once per process; NotBuilt when missing or stale."""
        if not is_index_fresh(corpus):
            state = "out of date" if (corpus.runs.index / MANIFEST_FILE).exists() else "not built"
            raise NotBuilt(f"the retrieval index of corpus {corpus.name!r} is {state}; "
                           f"run: assistant build {corpus.root} --variant rag")
        cfg = corpus.config
        return _load_cached(str(corpus.runs.index.resolve()), index_fingerprint(corpus),
                            cfg.retrieval.model_dump_json(), cfg.model.device)

    def embed_queries(self, queries: Sequence[str]) -> np.ndarray:
        # Cached: the chat asks `rag` and `rag_sft` the same question, the evaluation asks both
        # the same test set.
        unique = list(dict.fromkeys(queries))
        with self._lock:
            found = {q: self._cache[q] for q in unique if q in self._cache}
        missing = [q for q in unique if q not in found]
        if missing:
            found.update(zip(missing, embed_queries(self.embedder, missing)))
            with self._lock:
                self._cache.update((q, found[q]) for q in missing)
                while len(self._cache) > QUERY_CACHE:
                    self._cache.pop(next(iter(self._cache)))
        return np.stack([found[q] for q in queries])

    def search(self, query: str, k: int | None = None) -> list[Source]:
        return self.search_many([query], k)[0]

    def search_many(self, queries: Sequence[str], k: int | None = None) -> list[list[Source]]:
        """Top-k passages for each query; the queries are embedded in one batch."""
        if not queries:
            return []
        k = min(k or self.settings.top_k, len(self.chunks))
        scores, ids = self.index.search(self.embed_queries(queries), k)
        results = []
        for row_ids, row_scores in zip(ids, scores):
            hits = [(self.chunks[i], float(s)) for i, s in zip(row_ids, row_scores) if i >= 0]  # -1: no hit
            results.append([Source(c.path, c.heading, c.text, s, rank, c.page) for rank, (c, s) in enumerate(hits, 1)])
        return results


@lru_cache(maxsize=4)
def _load_cached(folder: str, fingerprint: str, retrieval_json: str, device: str) -> Retriever:
    import faiss

    settings = RetrievalSettings.model_validate_json(retrieval_json)
    path = Path(folder)
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    index = faiss.read_index(str(path / INDEX_FILE))
    tune_index(index, settings)
    with open(path / CHUNKS_FILE, encoding="utf-8") as f:
        chunks = [Chunk(**json.loads(line)) for line in f if line.strip()]
    if index.ntotal != len(chunks):
        raise NotBuilt(f"{path} is inconsistent ({index.ntotal} vectors, {len(chunks)} chunks); "
                       "rebuild with: assistant build <corpus> --variant rag --force")
    retriever = Retriever(index, chunks, load_embedder(settings.embedder, device), settings, manifest)
    retriever.embed_queries(["warm-up"])  # the first encode pays one-off setup: keep it out of latencies
    return retriever


# -- metrics ----------------------------------------------------------------------------------
def gold_rank(gold: str, paths: Sequence[str]) -> int | None:
    """1-based rank of the first passage from the gold document, None when absent."""
    return next((r for r, p in enumerate(paths, 1) if p == gold), None)


def retrieval_metrics(gold: Sequence[str], retrieved: Sequence[Sequence[str]], k: int) -> dict:
    """recall@k (gold document among the top k passages) and MRR@k over questions with a gold source."""
    ranks = [gold_rank(g, list(paths)[:k]) for g, paths in zip(gold, retrieved) if g]
    n = len(ranks)
    return {
        "k": k, "n": n,
        "recall": sum(r is not None for r in ranks) / n if n else float("nan"),
        "mrr": sum(1 / r for r in ranks if r) / n if n else float("nan"),
    }


def evaluate_retrieval(corpus: Corpus, k: int | None = None, split: str | None = "test") -> dict:
    """Retrieval metrics over the answerable questions of a split (None: all splits), with per-question rows."""
    k = k or corpus.config.retrieval.top_k
    items = [q for q in corpus.questions(split, "answerable") if q.source]
    retriever = Retriever.load(corpus)
    results = retriever.search_many([q.question for q in items], k)
    paths = [[s.path for s in r] for r in results]
    metrics = retrieval_metrics([q.source for q in items], paths, k)
    metrics["rows"] = [{"id": q.id, "question": q.question, "gold": q.source, "rank": gold_rank(q.source, p),
                        "retrieved": p, "best_score": r[0].score if r else None}
                       for q, p, r in zip(items, paths, results)]
    return metrics


def report_retrieval(corpus: Corpus, k: int | None = None, split: str = "test") -> dict:
    """Print recall@k and MRR of the gold document on answerable questions (builds the index if needed)."""
    if not is_index_fresh(corpus):
        build_index(corpus)
    m = evaluate_retrieval(corpus, k, None if split == "all" else split)
    if not m["n"]:
        print(f"no answerable questions with a 'source' in split {split!r} of {corpus.qa_path}")
        return m
    misses = [r for r in m["rows"] if r["rank"] is None]
    if misses:
        print(f"gold document not in the top {m['k']} ({len(misses)} questions):")
        for r in misses:
            got = ", ".join(dict.fromkeys(r["retrieved"]))
            print(f"  {r['id']}: {r['question']}\n      gold {r['gold']}; retrieved {got}")
    print(f"{corpus.name} split={split}: {m['n']} answerable questions, "
          f"recall@{m['k']} = {m['recall']:.3f}, MRR@{m['k']} = {m['mrr']:.3f}")
    return m
