"""Build the artifacts of one or several variants (what `assistant build` runs)."""

from __future__ import annotations

from contextlib import contextmanager

from filelock import FileLock
from rich.console import Console

from assistant.config import VARIANTS
from assistant.corpus.corpus import Corpus
from assistant.storage import hold_lock, lock_for, recover_swap
from assistant.variants import NotBuilt, variant_class

_held: dict[str, FileLock] = {}  # one lock object per corpus in a process, so `compare` can re-enter it


@contextmanager
def corpus_lock(corpus: Corpus):
    """Held while a corpus's variants are built or evaluated: one process at a time per corpus, so
    two builds never share (or delete) a checkpoint folder and an evaluation never reads an adapter
    being replaced. A second process fails at once with LockedError (exit 2) instead of waiting."""
    path = corpus.runs_dir / "corpus"
    lock = _held.setdefault(str(path), lock_for(path, timeout=0))
    with hold_lock(lock, f"another process is building or evaluating corpus {corpus.name!r}"):
        yield


def build_variants(corpus: Corpus, names: list[str] | None = None, force: bool = False) -> dict[str, dict]:
    """Build each named variant (all by default) unless up to date; return what each build measured."""
    with corpus_lock(corpus):
        return _build_variants(corpus, names, force)


def recover_interrupted(corpus: Corpus) -> None:
    """Under the corpus lock: put back an artifact a killed rebuild had moved aside mid-swap."""
    for folder in (corpus.runs_dir / "rag", corpus.runs_dir / "sft" / "adapter", corpus.runs_dir / "rag_sft" / "adapter"):
        recover_swap(folder)


def _build_variants(corpus: Corpus, names: list[str] | None, force: bool) -> dict[str, dict]:
    recover_interrupted(corpus)
    console = Console(stderr=True)
    reports = {}
    for name in names or list(VARIANTS):
        try:
            cls = variant_class(name)
        except NotBuilt as e:
            if names:
                raise
            console.print(f"skip {name}: {e}")
            continue
        if not cls.needs_build:
            console.print(f"{name}: nothing to build")
            continue
        if cls.is_built(corpus) and not force:
            console.print(f"{name}: up to date")
            reports[name] = {"reused": True}
            continue
        console.print(f"{name}: building")
        reports[name] = cls.build(corpus, force=force)
    return reports
