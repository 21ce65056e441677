"""The one map of a corpus's runs folder: every module asks `corpus.runs` where an artifact lives.

    runs/<corpus>/
      .corpus.lock                   held while a build or an evaluation runs (corpus.corpus_lock)
      rag/                           the FAISS index: index.faiss, chunks.jsonl, manifest.json, build.json
      sft/, rag_sft/                 adapter/, checkpoints/, tensorboard/, training_log.json, build.json
      eval/<timestamp>/              results.jsonl, metrics.json, report.md, report.html, plots/
      eval/latest                    the newest of them
      eval/cache/                    answers per variant and fingerprint, judge grades, support vectors
      eval/app-evaluation.log        an evaluation started from the app
      score/cache/                   judge grades of `assistant score`
      questions/                     generations.jsonl (cached generator replies), report.json
      labels.jsonl, votes.jsonl      human labels and the app's blind votes
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

BUILD_FILE = "build.json"  # a variant's build report, written last: its fingerprint marks the build done
ADAPTER, CHECKPOINTS, LOG_FILE, TENSORBOARD = "adapter", "checkpoints", "training_log.json", "tensorboard"
INDEX_FILE, CHUNKS_FILE, MANIFEST_FILE = "index.faiss", "chunks.jsonl", "manifest.json"


@dataclass(frozen=True)
class RunPaths:
    """Where each artifact of one corpus lives; `root` is `Corpus.runs_dir`."""

    root: Path

    # -- builds ----------------------------------------------------------------------------------
    @property
    def lock(self) -> Path:
        """The corpus lock's path (lock_for adds `.lock`)."""
        return self.root / "corpus"

    def variant(self, name: str) -> Path:
        """A variant's build folder (rag: the index; sft, rag_sft: the adapter and its training)."""
        return self.root / name

    @property
    def index(self) -> Path:
        return self.variant("rag")

    @property
    def chunks(self) -> Path:
        return self.index / CHUNKS_FILE

    def adapter(self, variant: str) -> Path:
        return self.variant(variant) / ADAPTER

    def checkpoints(self, variant: str) -> Path:
        return self.variant(variant) / CHECKPOINTS

    def training_log(self, variant: str) -> Path:
        return self.variant(variant) / LOG_FILE

    def build_report(self, variant: str) -> Path:
        return self.variant(variant) / BUILD_FILE

    def swapped_artifacts(self) -> tuple[Path, ...]:
        """Folders a rebuild replaces by a swap (put back after a kill between its two renames)."""
        return self.index, self.adapter("sft"), self.adapter("rag_sft")

    # -- evaluations -------------------------------------------------------------------------------
    @property
    def evals(self) -> Path:
        """One folder per evaluation, named by its time, and `latest`."""
        return self.root / "eval"

    @property
    def latest_eval(self) -> Path:
        return self.evals / "latest"

    @property
    def eval_cache(self) -> Path:
        return self.evals / "cache"

    def answer_cache(self, variant: str, fingerprint: str) -> Path:
        return self.eval_cache / f"{variant}-{fingerprint}.jsonl"

    def support_cache(self, key: str) -> Path:
        return self.eval_cache / f"support-{key}.npy"

    @property
    def app_eval_log(self) -> Path:
        return self.evals / "app-evaluation.log"

    @property
    def score_cache(self) -> Path:
        return self.root / "score" / "cache"

    @property
    def questions(self) -> Path:
        return self.root / "questions"

    # -- people ------------------------------------------------------------------------------------
    @property
    def labels(self) -> Path:
        return self.root / "labels.jsonl"

    @property
    def votes(self) -> Path:
        return self.root / "votes.jsonl"
