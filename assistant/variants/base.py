"""The one interface every variant implements: `answer(question) -> Answer`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

from assistant.corpus.corpus import Corpus
from assistant.errors import NotBuilt  # noqa: F401  (re-exported: variants raise it)
from assistant.model.decoding import DECODING_VERSION
from assistant.model.engine import Engine, Messages
from assistant.variants.retrieval import Source

ABSTAIN_TEXT = "I don't know."


@dataclass
class Answer:
    text: str
    variant: str
    sources: list[Source] = field(default_factory=list)
    latency_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    abstained_before_generation: bool = False  # e.g. retrieval found nothing relevant
    below_min_score: bool = False  # the retrieval gate found nothing relevant (declined, or answered without passages)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict:
        d = asdict(self)
        for row, s in zip(d["sources"], self.sources):
            row["citation"] = s.citation()
        return d


@dataclass
class Prompt:
    """What a variant sends to the engine for one question (None messages: answer without generating)."""

    messages: Messages | None
    sources: list[Source] = field(default_factory=list)
    below_min_score: bool = False


class Variant:
    """Base class: subclasses build the prompt; generation and bookkeeping are shared."""

    name: str = "base"
    adapter: str | None = None  # PEFT adapter name on the shared engine, None for the base model
    needs_build: bool = False

    def __init__(self, corpus: Corpus, engine: Engine):
        self.corpus = corpus
        self.engine = engine

    @classmethod
    def is_built(cls, corpus: Corpus) -> bool:
        return True

    @classmethod
    def build(cls, corpus: Corpus, force: bool = False) -> dict:
        """Build the variant's artifacts (index, adapter) unless fresh; return what was measured."""
        return {}

    @classmethod
    def fingerprint(cls, corpus: Corpus) -> str:
        """Identifies what the variant's answers depend on (used to cache evaluation answers)."""
        import hashlib

        cfg = corpus.config
        key = cls.name + corpus.fingerprint() + cfg.system_prompt + cfg.model.model_dump_json() \
            + cfg.generation.model_dump_json() + DECODING_VERSION
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    # Subclasses override this one method.
    def prompt(self, question: str, history: Sequence[tuple[str, str]] = ()) -> Prompt:
        raise NotImplementedError

    def system_prompt(self) -> str:
        return self.corpus.config.system_prompt

    @staticmethod
    def with_history(system: str, history: Sequence[tuple[str, str]], user: str) -> Messages:
        msgs = [{"role": "system", "content": system}]
        for q, a in history:
            msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        msgs.append({"role": "user", "content": user})
        return msgs

    @contextmanager
    def gate_open(self) -> Iterator[None]:
        """Within: a retrieval gate lets the model answer instead of declining (see RagVariant); the
        evaluation answers general and safety probes this way, so forgetting and refusals are the
        model's own. A no-op for variants without a gate."""
        yield

    def context_tokens(self) -> int:
        """The model's context window (positions), prompt and answer together."""
        config = getattr(getattr(self.engine, "model", None), "config", None)
        return int(getattr(config, "max_position_embeddings", None) or 2048)

    def fitted(self, make: Callable[[list, list], Messages], passages: Sequence = (),
               history: Sequence[tuple[str, str]] = ()) -> tuple[Messages, list]:
        """`make(passages, history)` with the oldest turns, then the last passages, left out until
        the prompt plus `max_new_tokens` fits the model's context (a prompt past it would fail, or
        be cut where the question is). Returns the messages and the passages they show."""
        passages, history = list(passages), list(history)
        budget = self.context_tokens() - getattr(self.engine, "max_new_tokens", 0)
        while True:
            messages = make(passages, history)
            if self.engine.count_tokens(self.engine.render(messages)) <= budget or not (history or len(passages) > 1):
                return messages, passages
            if history:
                history.pop(0)
            else:
                passages.pop()

    def answer(self, question: str) -> Answer:
        return self.answer_many([question])[0]

    def prompts_many(self, questions: Sequence[str]) -> list[Prompt]:
        """Prompts for many questions; override to batch shared work (e.g. retrieval)."""
        return [self.prompt(q) for q in questions]

    def answer_many(self, questions: Sequence[str], progress: bool | str = False) -> list[Answer]:
        t0 = time.perf_counter()
        prompts = self.prompts_many(questions)
        prep_s = (time.perf_counter() - t0) / max(len(questions), 1)  # e.g. retrieval, shared evenly
        todo = [i for i, p in enumerate(prompts) if p.messages is not None]
        gens = self.engine.generate([prompts[i].messages for i in todo], adapter=self.adapter,
                                    progress=progress) if todo else []
        answers = [Answer(ABSTAIN_TEXT, self.name, p.sources, prep_s, abstained_before_generation=True,
                          below_min_score=True) for p in prompts]
        for i, g in zip(todo, gens):
            answers[i] = Answer(g.text, self.name, prompts[i].sources, prep_s + g.latency_s / max(g.batch_size, 1),
                                g.prompt_tokens, g.completion_tokens, below_min_score=prompts[i].below_min_score)
        return answers

    def stream(self, question: str, history: Sequence[tuple[str, str]] = ()) -> Iterator[Answer]:
        """Yield a growing Answer as tokens arrive (the chat app's path)."""
        t0 = time.perf_counter()
        p = self.prompt(question, history)
        if p.messages is None:
            yield Answer(ABSTAIN_TEXT, self.name, p.sources, time.perf_counter() - t0,
                         abstained_before_generation=True, below_min_score=True)
            return
        prompt_tokens = self.engine.count_tokens(self.engine.render(p.messages))
        text = ""
        for text in self.engine.stream(p.messages, adapter=self.adapter):
            yield Answer(text, self.name, p.sources, time.perf_counter() - t0, prompt_tokens,
                         self.engine.count_tokens(text))
        yield Answer(text.strip(), self.name, p.sources, time.perf_counter() - t0, prompt_tokens,
                     self.engine.count_tokens(text))
