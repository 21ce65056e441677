"""`prompted`: the base instruct model with the corpus's system prompt (and optional few-shot)."""

from __future__ import annotations

from collections.abc import Sequence

from assistant.variants.base import Prompt, Variant


class PromptedVariant(Variant):
    name = "prompted"

    def few_shot(self) -> list[tuple[str, str]]:
        """The first N answerable train pairs, as earlier turns of the conversation."""
        n = self.corpus.config.generation.few_shot
        pairs = [(q.question, q.answer) for q in self.corpus.questions("train", "answerable") if q.answer]
        return pairs[:n]

    def prompt(self, question: str, history: Sequence[tuple[str, str]] = ()) -> Prompt:
        shots = self.few_shot()
        messages, _ = self.fitted(lambda _, h: self.with_history(self.system_prompt(), shots + h, question),
                                  history=history)  # past turns go first when the context is full
        return Prompt(messages)
