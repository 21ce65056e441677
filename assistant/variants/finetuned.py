"""What `sft` and `rag_sft` share: a LoRA adapter trained by assistant/variants/training.py on the corpus, named
after the variant and loaded onto the shared engine; built, judged fresh and fingerprinted by training."""

from __future__ import annotations

import hashlib

from assistant.variants import training
from assistant.corpus.corpus import Corpus
from assistant.model.engine import Engine


class FineTuned:
    """Mixin placed before a Variant class: `class SftVariant(FineTuned, Variant)`."""

    needs_build = True
    name: str
    adapter: str  # its name on the shared engine

    def __init__(self, corpus: Corpus, engine: Engine):
        super().__init__(corpus, engine)  # type: ignore[call-arg]
        engine.add_adapter(self.adapter, str(corpus.runs.adapter(self.name)))

    @classmethod
    def is_built(cls, corpus: Corpus) -> bool:
        """The base variant's artifacts (rag_sft: the index) and an adapter for today's data and settings."""
        return super().is_built(corpus) and training.is_trained(corpus, cls.name)  # type: ignore[misc]

    @classmethod
    def build(cls, corpus: Corpus, force: bool = False) -> dict:
        return training.build(corpus, cls.name, force=force)  # builds rag_sft's index first when needed

    @classmethod
    def fingerprint(cls, corpus: Corpus) -> str:
        key = super().fingerprint(corpus) + training.fingerprint(corpus, cls.name)  # type: ignore[misc]
        return hashlib.sha256(key.encode()).hexdigest()[:16]
