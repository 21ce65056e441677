"""`rag`: the base model answering from the top-k passages of the FAISS index, citing them.

`rag_messages` is the one prompt format shared by `rag` and `rag_sft` (which trains on it), so a
passage reads the same at training and at serving time. It is kept short on purpose: a 135M
model follows a two-line instruction better than a paragraph of rules.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from assistant.corpus.corpus import Corpus
from assistant.model.engine import Engine, Messages
from assistant.variants.base import Prompt, Variant
from assistant.variants.retrieval import Retriever, Source, build_index, index_fingerprint, is_index_fresh

# Bump when rag_messages changes: cached evaluation answers and rag_sft's training data depend on it.
# "2" (the instruction in the system turn, so that every RAG prompt shares it as a cached prefix) was
# reverted: on the demo corpus it cost rag 7 points of verified accuracy (18.7% -> 11.5%, n = 374; 43
# answers turned wrong, 18 right) for ~38 fewer prompt tokens to prefill. "1" again: the prompt is v1's.
PROMPT_VERSION = "1"
INSTRUCTION = ("Answer the question using only the passages above, and cite the passage you used "
               "like [1]. If the passages do not contain the answer, say \"I don't know.\"")


def format_passages(passages: Sequence[Source]) -> str:
    return "\n\n".join(f"[{i}] {p.heading}: {p.text}" if p.heading else f"[{i}] {p.text}"
                       for i, p in enumerate(passages, 1))


def rag_messages(system_prompt: str, question: str, passages: Sequence[Source],
                 history: Sequence[tuple[str, str]] = ()) -> Messages:
    """Chat messages: system prompt, earlier turns, then numbered passages + instruction + question.
    The engine shares the system turn's computation among prompts (Engine.prefix_length); the
    instruction stays after the passages, where the default model follows it best (PROMPT_VERSION)."""
    user = f"Passages:\n{format_passages(passages)}\n\n{INSTRUCTION}\n\nQuestion: {question}"
    return Variant.with_history(system_prompt, history, user)


class RagVariant(Variant):
    name = "rag"
    needs_build = True
    gate_is_open = False  # see gate_open()

    def __init__(self, corpus: Corpus, engine: Engine):
        super().__init__(corpus, engine)
        self.retriever = Retriever.load(corpus)
        self.settings = corpus.config.retrieval

    @classmethod
    def is_built(cls, corpus: Corpus) -> bool:
        return is_index_fresh(corpus)

    @classmethod
    def build(cls, corpus: Corpus, force: bool = False) -> dict:
        return build_index(corpus, force=force)

    @classmethod
    def fingerprint(cls, corpus: Corpus) -> str:
        r = corpus.config.retrieval
        key = (super().fingerprint(corpus) + index_fingerprint(corpus) + PROMPT_VERSION
               + r.model_dump_json(include={"top_k", "min_score", "below_min_score", "hnsw_ef_search", "ivf_nprobe"}))
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def prompt_from(self, question: str, sources: list[Source],
                    history: Sequence[tuple[str, str]] = ()) -> Prompt:
        # Nothing relevant retrieved: abstain without generating, or answer without passages;
        # the sources are kept either way, so the user sees how weak the matches were.
        if not sources or sources[0].score < self.settings.min_score:
            if self.settings.below_min_score == "no_context" or self.gate_is_open:
                return Prompt(self.with_history(self.system_prompt(), history, question), sources, True)
            return Prompt(None, sources, True)
        messages, shown = self.fitted(lambda ps, h: rag_messages(self.system_prompt(), question, ps, h), sources,
                                      history)
        return Prompt(messages, shown)  # the passages shown: citations [n] point into exactly these

    @contextmanager
    def gate_open(self) -> Iterator[None]:
        """Answer from the model alone below min_score (as `below_min_score: no_context` does), while
        each answer still records that the gate would have declined (`below_min_score`)."""
        saved, self.gate_is_open = self.gate_is_open, True
        try:
            yield
        finally:
            self.gate_is_open = saved

    def prompt(self, question: str, history: Sequence[tuple[str, str]] = ()) -> Prompt:
        return self.prompt_from(question, self.retriever.search(question), history)

    def prompts_many(self, questions: Sequence[str]) -> list[Prompt]:
        results = self.retriever.search_many(list(questions))
        return [self.prompt_from(q, sources) for q, sources in zip(questions, results)]
