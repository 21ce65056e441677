"""Scoring answers: the outcome (rules and reasons in `claims.py`), graded similarities, unsupported
claims and retrieval hits."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from assistant import text as T
from assistant.evaluation.claims import (  # noqa: F401  (the scorer's public names stay reachable as metrics.X)
    SIMILARITY_THRESHOLD, STOPWORDS, Context, CorpusFacts, Judgement, Parsed,
    answer_similarities, clauses, contains, content_words, derived_facts, facts_present, gold_section, is_abstention,
    judge, needs_similarity, numbers, parse, polarity, reference_entities, tokens)
from assistant.evaluation.outcomes import JUDGED, OUTCOMES, UNVERIFIED  # noqa: F401  (as metrics.X too)
from assistant.model.loading import embed, load_embedder  # noqa: F401  (the one embedder, as M.load_embedder too)


def outcome(kind: str, answer: str, key_facts: Sequence[str] = (), reference: str = "",
            context: Context | None = None, similarity: float | None = None,
            threshold: float = SIMILARITY_THRESHOLD) -> str:
    """`correct`, `abstained`, `hallucinated` or `unverified` for one answer (see `judge` for the reason too)."""
    return judge(kind, answer, key_facts, reference, context, similarity, threshold).outcome


# -- graded scores -----------------------------------------------------------------------------
def token_f1(answer: str, reference: str) -> float:
    """SQuAD-style token F1 over normalised tokens."""
    a, r = tokens(answer), tokens(reference)
    common = sum((Counter(a) & Counter(r)).values())
    if not a or not r or not common:
        return 0.0
    precision, recall = common / len(a), common / len(r)
    return 2 * precision * recall / (precision + recall)


def rouge_and_similarity(answers: Sequence[str], references: Sequence[str]) -> tuple[list[float], list[float]]:
    """ROUGE-L F and normalised Levenshtein similarity via ragas' non-LLM metrics.

    `batch_score` runs one event loop for the whole batch (~30 us a row); the per-row `score`
    starts an event loop each call (~7 ms a row), so rows go through in one batch.
    """
    from ragas.metrics.collections import NonLLMStringSimilarity, RougeScore

    rows = [{"reference": r or "", "response": a or ""} for a, r in zip(answers, references)]
    if not rows:
        return [], []
    rouge = [m.value for m in RougeScore(rouge_type="rougeL", mode="fmeasure").batch_score(rows)]
    sim = [m.value for m in NonLLMStringSimilarity().batch_score(rows)]
    return [float(x) for x in rouge], [float(x) for x in sim]


def embedding_similarity(embedder, answers: Sequence[str], references: Sequence[str]) -> list[float | None]:
    """Cosine similarity of answer and reference embeddings (None where there is no reference)."""
    idx = [i for i, r in enumerate(references) if r]
    a = embed(embedder, [answers[i] for i in idx])
    r = embed(embedder, [references[i] for i in idx])
    out: list[float | None] = [None] * len(answers)
    for k, i in enumerate(idx):
        out[i] = float(a[k] @ r[k])
    return out


# -- unsupported claims ------------------------------------------------------------------------
@dataclass
class SupportIndex:
    """Every sentence of the corpus (and each pair of neighbours), embedded once.

    An answer sentence is *supported* when its nearest corpus unit has cosine >= threshold and
    every number it states appears in one of its five nearest units. The same check runs for
    every variant, retrieval or not, so closed-book answers are held to the same standard.
    """

    units: list[str]
    vectors: np.ndarray
    threshold: float
    unit_numbers: list[set[str]] = field(default_factory=list)

    @classmethod
    def build(cls, embedder, documents: Sequence[str], threshold: float, vectors: np.ndarray | None = None):
        units = []
        for doc in documents:
            sents = T.markdown_sentences(doc)
            units += sents + [f"{a} {b}" for a, b in zip(sents, sents[1:])]
        vecs = vectors if vectors is not None and len(vectors) == len(units) else embed(embedder, units)
        return cls(units, vecs, threshold, [numbers(tokens(u)) for u in units])

    def claims(self, answer: str) -> list[str]:
        """The answer's asserted sentences with at least two content words."""
        p = parse(answer)
        return [c for c in p.content.split(" . ") if len(content_words(tokens(c))) >= 2]

    def check(self, embedder, answers: Sequence[str], questions: Sequence[str] | None = None) -> list[tuple[int, int]]:
        """(unsupported, total) claim counts for each answer.

        A short claim ("Twenty one days.") means nothing without its question, so claims of fewer
        than four content words are embedded after the question; longer ones are judged alone, so
        an invented aside cannot borrow support from the question's wording.
        """
        per = [self.claims(a) for a in answers]
        qs = list(questions) if questions is not None else [""] * len(answers)
        flat = [c for cs in per for c in cs]
        texts = [f"{q} {c}".strip() if len(content_words(tokens(c))) < 4 else c
                 for q, cs in zip(qs, per) for c in cs]
        if not flat or not self.units:
            return [(0, len(cs)) for cs in per]
        sims = embed(embedder, texts) @ self.vectors.T
        top = np.argsort(-sims, axis=1)[:, :5]
        ok = []
        for k, claim in enumerate(flat):
            nums = numbers(tokens(claim))
            near = set().union(*(self.unit_numbers[j] for j in top[k]))
            ok.append(bool(sims[k, top[k, 0]] >= self.threshold and nums <= near))
        out, i = [], 0
        for cs in per:
            out.append((sum(not x for x in ok[i:i + len(cs)]), len(cs)))
            i += len(cs)
        return out


# -- retrieval ---------------------------------------------------------------------------------
def retrieval_scores(gold: str, sources: Sequence[dict]) -> tuple[float, float] | None:
    """(hit@k, reciprocal rank) of the gold document among an answer's sources; None without gold or sources."""
    if not gold or not sources:
        return None
    ranked = sorted(sources, key=lambda s: s.get("rank", 0))
    for pos, s in enumerate(ranked, 1):
        if s.get("path") == gold:
            return 1.0, 1.0 / pos
    return 0.0, 0.0
