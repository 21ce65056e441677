"""`sft`: the base model with a LoRA adapter fine-tuned on the train split (closed book)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from .. import training
from ..corpus import Corpus
from ..generation import Engine
from .base import Prompt, Variant


class SftVariant(Variant):
    name = "sft"
    adapter = "sft"
    needs_build = True

    def __init__(self, corpus: Corpus, engine: Engine):
        super().__init__(corpus, engine)
        engine.add_adapter(self.adapter, str(training.adapter_dir(corpus, self.name)))

    @classmethod
    def is_built(cls, corpus: Corpus) -> bool:
        return training.is_trained(corpus, cls.name)

    @classmethod
    def build(cls, corpus: Corpus, force: bool = False) -> dict:
        return training.build(corpus, cls.name, force=force)

    @classmethod
    def fingerprint(cls, corpus: Corpus) -> str:
        key = super().fingerprint(corpus) + training.fingerprint(corpus, cls.name)
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def prompt(self, question: str, history: Sequence[tuple[str, str]] = ()) -> Prompt:
        # Exactly the training prompt (training.qa_examples): system prompt, then the question.
        return Prompt(self.fitted(lambda _, h: self.with_history(self.system_prompt(), h, question), history=history)[0])
