"""`rag_sft`: RAFT-style hybrid, a LoRA adapter trained on prompts holding retrieved passages
(gold + distractors, see training.raft_examples), served with the same retrieval and prompt as `rag`."""

from __future__ import annotations

import hashlib

from .. import training
from ..corpus import Corpus
from ..generation import Engine
from .rag import RagVariant


class RagSftVariant(RagVariant):
    name = "rag_sft"
    adapter = "rag_sft"
    needs_build = True

    def __init__(self, corpus: Corpus, engine: Engine):
        super().__init__(corpus, engine)
        engine.add_adapter(self.adapter, str(training.adapter_dir(corpus, self.name)))

    @classmethod
    def is_built(cls, corpus: Corpus) -> bool:
        return super().is_built(corpus) and training.is_trained(corpus, cls.name)

    @classmethod
    def build(cls, corpus: Corpus, force: bool = False) -> dict:
        return training.build(corpus, cls.name, force=force)  # builds the index first when needed

    @classmethod
    def fingerprint(cls, corpus: Corpus) -> str:
        key = super().fingerprint(corpus) + training.fingerprint(corpus, cls.name)
        return hashlib.sha256(key.encode()).hexdigest()[:16]
