"""Build the artifacts of one or several variants (what `assistant build` runs)."""

from __future__ import annotations

from rich.console import Console

from assistant.config import VARIANTS
from assistant.corpus.corpus import Corpus, corpus_lock
from assistant.errors import NotBuilt
from assistant.storage import recover_swap
from assistant.variants import variant_class


def build_variants(corpus: Corpus, names: list[str] | None = None, force: bool = False) -> dict[str, dict]:
    """Build each named variant (all by default) unless up to date; return what each build measured."""
    with corpus_lock(corpus):
        return _build_variants(corpus, names, force)


def recover_interrupted(corpus: Corpus) -> None:
    """Under the corpus lock: put back an artifact a killed rebuild had moved aside mid-swap."""
    for folder in corpus.runs.swapped_artifacts():
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
