"""`sft`: the base model with a LoRA adapter fine-tuned on the train split (closed book)."""

from __future__ import annotations

from collections.abc import Sequence

from assistant.variants.base import Prompt, Variant
from assistant.variants.finetuned import FineTuned


class SftVariant(FineTuned, Variant):
    name = "sft"
    adapter = "sft"

    def prompt(self, question: str, history: Sequence[tuple[str, str]] = ()) -> Prompt:
        # Exactly the training prompt (training.qa_examples): system prompt, then the question.
        return Prompt(self.fitted(lambda _, h: self.with_history(self.system_prompt(), h, question), history=history)[0])
