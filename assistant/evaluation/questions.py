"""`assistant questions`: a validated question set generated from the documents alone.

For every section of every document (long sections cut into passages of about
`generator.section_words` words) the generator writes questions a user would ask, each with a
reference answer and a key fact, then rewordings of each question, then a few questions close to
the domain that no document answers. The generator is the corpus's own model through the shared
engine, or any OpenAI-compatible server set under `generator:` in corpus.yaml. A small local model
cannot write question, answer and exact fact together, so in `sentence` mode (the default for the
local model) the facts are the numbers of a source sentence, the answer is that sentence, and the
model writes only the questions, one per few-shot example.

Nothing is kept unchecked. An item is dropped, and counted by reason, when:

- `unparsable`: the generator's reply holds no question;
- `fact_not_in_source`: no key fact occurs verbatim (after `text.normalize`) in its passage;
- `answer_in_question`: the question contains its own key fact;
- `not_retrieved`: the question does not retrieve its passage's section in the top `generator.top_k`;
- `near_duplicate`: a val/test wording repeats (exactly, or above the cosine of the leakage guard
  in `checks.py`) a train wording;
- `answered_by_docs`: an "unanswerable" question whose best passage scores above
  `generator.unanswerable_max_score`, or whose key terms all occur in one document;
- `off_question` (augmentation): a rewording that asks something else than its train question
  (cosine below `generator.reword_min_similarity`); a rewording must also retrieve the question's
  source document (`not_retrieved`) and not repeat a val/test question (`near_duplicate`).

Kept facts are split like written sets: `generator.test_only_fraction` of them only in test (the
`unseen` slice), the others with their first wording in train, the second in test (the
`paraphrase` slice), the third in val. Generations are cached per prompt under
`runs/<corpus>/questions/`, so an interrupted run resumes and a rerun with the same seed and
generator writes the same file.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import sys
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from tqdm.auto import tqdm

from assistant.config import NEAR_DUPLICATE, GeneratorSettings
from assistant.corpus.chunking import page_sections
from assistant.corpus.corpus import Corpus, QAItem
from assistant.corpus.importers import assign_splits
from assistant.errors import AssistantError, UsageError
from assistant.model.engine import Messages
from assistant.model.loading import embed, load_embedder
from assistant.model.remote import openai_client
from assistant.storage import append_jsonl, atomic_write_json, atomic_write_text, read_jsonl
from assistant.text import common_terms, contains_fact, key_terms, normalize, quick_sentences, tokens
from assistant.variants import open_engine
from assistant.variants.retrieval import Retriever, build_index, is_index_fresh

REASONS = ("unparsable", "fact_not_in_source", "answer_in_question", "not_retrieved", "near_duplicate",
           "answered_by_docs", "off_question")
UNANSWERED = "I don't know."
PROMPT_VERSION = 1  # bump when a prompt changes: cached generations are keyed by it
CACHE_BATCH = 16  # prompts generated between two cache appends (what an interruption can lose)
# Numbers with their unit ("30 days", "$7.95", "9 am"): the key facts of an answer that names none.
UNITS = (r"business days|working days|days?|weeks?|months?|years?|hours?|minutes?|seconds?|am|pm|a\.m\.|p\.m\.|"
         r"percent|characters|points|pairs|items|orders|euros?|dollars?|pounds|kg|g|km|cm|mm|m|ml|l")
# Not inside a word ("CO2e", "ES-204871" keep their digits to themselves).
NUMBER_FACT = re.compile(rf"(?<![\w-])[$€£]?\d+(?:[.,:]\d+)*(?:\s?%|°[CF]|\s(?:{UNITS})(?!\w))?(?![\w-])")


# -- passages -------------------------------------------------------------------------------------
@dataclass
class Passage:
    id: str
    path: str
    heading: str
    page: int | None
    text: str


def passages(corpus: Corpus, words: int) -> list[Passage]:
    """Every section of every document, long ones cut at paragraphs into about `words` words."""
    out = []
    for doc in corpus.documents:
        for heading, paragraphs, page in page_sections(doc):
            groups: list[list[str]] = [[]]
            for para in paragraphs:
                if groups[-1] and sum(len(p.split()) for p in groups[-1]) + len(para.split()) > words:
                    groups.append([])
                groups[-1].append(para)
            for group in groups:
                text = "\n\n".join(group)
                if len(text.split()) < 5:  # a heading with one line under it: nothing to ask
                    continue
                key = hashlib.sha256(f"{doc.path}\0{heading}\0{page}\0{text}".encode()).hexdigest()[:10]
                out.append(Passage(key, doc.path, heading, page, text))
    return out


# -- generators -----------------------------------------------------------------------------------
class Generator(Protocol):
    name: str

    def complete(self, prompts: Sequence[Messages]) -> list[str]: ...


class LocalGenerator:
    """The corpus's base model through the shared engine (greedy, so the seed does not matter)."""

    def __init__(self, corpus: Corpus, settings: GeneratorSettings):
        self.engine = open_engine(corpus)
        self.max_new_tokens = settings.max_new_tokens
        self.name = corpus.config.model.name

    def complete(self, prompts: Sequence[Messages]) -> list[str]:
        return [g.text for g in self.engine.generate(prompts, max_new_tokens=self.max_new_tokens)]


class OpenAIGenerator:
    """Any OpenAI-compatible chat server (Ollama, vLLM, llama.cpp, a hosted API), temperature 0 with a seed."""

    def __init__(self, settings: GeneratorSettings):
        if not settings.model:
            raise UsageError("generator.base_url is set but generator.model is empty; name the server's model "
                             "in corpus.yaml (e.g. model: qwen2.5:7b-instruct)")
        if settings.api_key_env and not os.environ.get(settings.api_key_env):
            raise UsageError(f"generator.api_key_env names {settings.api_key_env!r}, which is not set; export it")
        self.client = openai_client(settings.base_url, settings.api_key_env, settings.timeout_s, max_retries=2)
        self.settings = settings
        self.name = settings.model

    def _one(self, messages: Messages) -> str:
        import openai

        s = self.settings
        try:
            r = self.client.chat.completions.create(model=s.model, messages=messages, temperature=0, seed=s.seed,
                                                    max_tokens=s.max_new_tokens)
        except openai.APIConnectionError:
            raise AssistantError(f"cannot reach the generator at {s.base_url}; start the server or fix "
                                 "generator.base_url in corpus.yaml") from None
        except openai.APIStatusError as e:
            raise AssistantError(f"the generator at {s.base_url} answered HTTP {e.status_code} "
                                 f"({str(e)[:160]}); check generator.model and the key") from None
        return r.choices[0].message.content or ""

    def complete(self, prompts: Sequence[Messages]) -> list[str]:
        with ThreadPoolExecutor(self.settings.max_concurrency) as pool:
            return list(pool.map(self._one, prompts))


def open_generator(corpus: Corpus) -> Generator:
    s = corpus.config.generator
    return OpenAIGenerator(s) if s.base_url else LocalGenerator(corpus, s)


class CachedGenerations:
    """Replies cached per (generator, prompt) in a JSONL file: a rerun or a resumed run asks only what is new."""

    def __init__(self, path: Path, generator: Generator):
        self.path = path
        self.generator = generator
        self.done = {r["key"]: r["text"] for r in read_jsonl(path) if "key" in r and "text" in r}

    def key(self, prompt: Messages) -> str:
        raw = json.dumps([PROMPT_VERSION, self.generator.name, prompt], sort_keys=True)
        return hashlib.sha256(raw.encode()).hexdigest()[:24]

    def __call__(self, prompts: Sequence[Messages], desc: str) -> list[str]:
        keys = [self.key(p) for p in prompts]
        todo = list(dict.fromkeys(k for k in keys if k not in self.done))
        by_key = dict(zip(keys, prompts))
        with tqdm(total=len(set(keys)), initial=len(set(keys)) - len(todo), desc=desc, unit="prompt",
                  file=sys.stderr) as bar:
            for start in range(0, len(todo), CACHE_BATCH):
                batch = todo[start:start + CACHE_BATCH]
                texts = self.generator.complete([by_key[k] for k in batch])
                append_jsonl(self.path, [{"key": k, "text": t} for k, t in zip(batch, texts)])
                self.done.update(zip(batch, texts))
                bar.update(len(batch))
        return [self.done[k] for k in keys]


# -- prompts and parsing --------------------------------------------------------------------------
SYSTEM = "You write realistic test questions for a customer support assistant, from the company's documents."


def qa_prompt(p: Passage, n: int) -> Messages:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": (
        f"Document section \"{p.heading}\":\n\"\"\"\n{p.text}\n\"\"\"\n\n"
        f"Write {n} different questions a customer would ask that this section answers. For each give a "
        "one-sentence answer from the section and its key fact: a short phrase (a number, name, date or "
        "amount) copied word for word from the section.\n"
        'Reply with JSON only: [{"question": "...", "answer": "...", "key_fact": "..."}]')}]


def reword_prompt(question: str, n: int) -> Messages:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": (
        f"Rewrite this customer question in {n} different ways that ask exactly the same thing, with "
        f"different words.\nQuestion: {question}\nReply with one question per line, nothing else.")}]


def unanswerable_prompt(corpus: Corpus, headings: list[str], n: int) -> Messages:
    topics = "\n".join(f"- {h}" for h in headings[:60])
    about = corpus.config.description or corpus.name
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": (
        f"The documents of \"{about}\" cover these topics:\n{topics}\n\n"
        f"Write {n} questions a customer might plausibly ask this company that these documents do NOT "
        "answer (a service, policy or detail they never mention). Reply with one question per line, nothing else.")}]


def unanswerable_shot(corpus: Corpus, topic: str, headings: list[str]) -> Messages:
    about = corpus.config.description or corpus.name
    ask = "Write one question a customer might ask about {t} that a page covering these points does not answer:\n{h}"
    example = ask.format(t="Delivery", h="- Delivery > Costs\n- Delivery > Times")
    return [{"role": "system", "content": f"{SYSTEM} The company: {about}."},
            {"role": "user", "content": example},
            {"role": "assistant", "content": "Can you deliver to a parcel locker?"},
            {"role": "user", "content": ask.format(t=topic, h="\n".join(f"- {x}" for x in headings[:8]))}]


def parse_qa(text: str) -> list[dict]:
    """Question/answer/fact objects from a reply: a JSON list, loose JSON objects, or Q:/A: lines."""
    rows: list[dict] = []
    for m in re.finditer(r"\{[^{}]*\}", text, re.S):
        try:
            obj = json.loads(m.group(0))
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            rows.append({k.lower(): v for k, v in obj.items()})
    if not rows:  # a small model often answers in lines instead
        cur: dict = {}
        for line in text.splitlines():
            m = re.match(r"^\s*(?:\d+[.)]\s*)?(q|question|a|answer|fact|key fact|key_fact)\s*[:\-]\s*(.+)$", line, re.I)
            if not m:
                continue
            tag = m.group(1).lower()
            field_ = "question" if tag.startswith("q") else "answer" if tag.startswith("a") else "key_fact"
            if field_ == "question" and cur:
                rows.append(cur)
                cur = {}
            cur[field_] = m.group(2).strip()
        if cur:
            rows.append(cur)
    out = []
    for r in rows:
        q = r.get("question")
        if not isinstance(q, str) or not q.strip():
            continue
        facts = r.get("key_facts", r.get("key_fact", r.get("fact", [])))
        facts = [facts] if isinstance(facts, str) else facts if isinstance(facts, list) else []
        ans = r.get("answer")
        out.append({"question": q.strip(), "answer": ans.strip() if isinstance(ans, str) else "",
                    "key_facts": [str(f).strip() for f in facts if str(f).strip()]})
    return out


def parse_lines(text: str) -> list[str]:
    """Questions from a one-per-line reply (numbering, bullets and quotes removed)."""
    out = []
    for line in text.splitlines():
        line = re.sub(r"^\s*(?:[-*\u2022]|\d+[.):]|question\s*\d*\s*:)\s*", "", line, flags=re.I).strip().strip('"\'')
        if len(line.split()) >= 3 and line.endswith("?"):
            out.append(line)
    return out


def _sentence_with(text: str, fact: str) -> str:
    for s in re.split(r"(?<=[.!?])\s+|\n+", text):
        if contains_fact(s, fact):
            return s.strip().lstrip("-*# ").strip()
    return ""


def key_facts_in_source(item: dict, source: str) -> list[str]:
    """The item's key facts found in its source; with none given, the numbers of its answer that are."""
    given = [f for f in item["key_facts"] if normalize(f)]
    if given:
        return [f for f in given if contains_fact(source, f)]
    return list(dict.fromkeys(m.group(0).strip(" .,") for m in NUMBER_FACT.finditer(item["answer"])
                              if contains_fact(source, m.group(0).strip(" .,"))))[:2]


# -- validation -----------------------------------------------------------------------------------
@dataclass
class Report:
    generator: str
    generated: Counter = field(default_factory=Counter)  # by kind: answerable wordings, unanswerable
    dropped: Counter = field(default_factory=Counter)
    kept: Counter = field(default_factory=Counter)

    def to_dict(self) -> dict:
        made, kept = sum(self.generated.values()), sum(self.kept.values())
        return {"generator": self.generator, "generated": dict(self.generated), "kept": dict(self.kept),
                "dropped": {r: self.dropped[r] for r in REASONS if self.dropped[r]},
                "kept_share": round(kept / made, 4) if made else 0.0}


def _retriever(corpus: Corpus) -> Retriever:
    if not is_index_fresh(corpus):
        build_index(corpus)
    return Retriever.load(corpus)


def retrieves_source(corpus: Corpus, items: list[tuple[str, Passage]], k: int) -> list[bool]:
    """Whether each question retrieves a passage of its own section (same document, heading and page)."""
    if not items:
        return []
    hits = _retriever(corpus).search_many([q for q, _ in items], k)
    return [any(h.path == p.path and h.heading == p.heading and h.page == p.page for h in found)
            for (_, p), found in zip(items, hits)]


def _repeats(texts: list[str], emb, others: list[str], other_emb) -> list[bool]:
    """Whether each text repeats one of `others`: the same once normalised, or above the leakage
    guard's cosine (config.NEAR_DUPLICATE); `emb` and `other_emb` are their normalised embeddings."""
    if not texts or not others:
        return [False] * len(texts)
    seen = {normalize(o) for o in others}
    best = (emb @ other_emb.T).max(axis=1)
    return [normalize(t) in seen or float(b) > NEAR_DUPLICATE for t, b in zip(texts, best)]


def leaks(questions: list[str], splits: list[str], embedder: str) -> list[bool]:
    """True for each val/test question that repeats a train question (normalised, or above the
    leakage guard's cosine, config.NEAR_DUPLICATE): training would see it."""
    train = [i for i, s in enumerate(splits) if s == "train"]
    held = [i for i, s in enumerate(splits) if s != "train"]
    out = [False] * len(questions)
    if not train or not held:
        return out
    emb = embed(load_embedder(embedder), questions)
    flags = _repeats([questions[i] for i in held], emb[held], [questions[i] for i in train], emb[train])
    for i, flag in zip(held, flags):
        out[i] = flag
    return out


def unanswerable_ok(corpus: Corpus, questions: list[str], max_score: float) -> list[bool]:
    """Kept when the best passage scores at most `max_score` and no document holds all the key terms."""
    if not questions:
        return []
    doc_terms = [set(tokens(d.text)) for d in corpus.documents]
    common = common_terms(doc_terms)
    best = [found[0].score if found else -1.0 for found in _retriever(corpus).search_many(questions, 1)]
    out = []
    for q, score in zip(questions, best):
        terms = key_terms(q, common)
        out.append(score <= max_score and bool(terms) and not any(terms <= words for words in doc_terms))
    return out


def _screen(wordings: list[str], key_facts: list[str], report: Report, seen: set[str] | None = None) -> list[str]:
    """Wordings that are new (normalised) and do not state their own key fact; drops counted."""
    seen = set() if seen is None else seen
    kept = []
    for w in wordings:
        report.generated["answerable"] += 1
        if normalize(w) in seen:
            report.dropped["near_duplicate"] += 1
        elif any(contains_fact(w, f) for f in key_facts):
            report.dropped["answer_in_question"] += 1
        else:
            seen.add(normalize(w))
            kept.append(w)
    return kept


def _from_passages(found: list[Passage], ask: CachedGenerations, s: GeneratorSettings,
                   report: Report) -> list[tuple[Passage, dict, list[str]]]:
    """A capable generator: questions, answers and key facts per passage (JSON), then rewordings."""
    candidates: list[tuple[Passage, dict]] = []
    for p, reply in zip(found, ask([qa_prompt(p, s.questions_per_section) for p in found], "questions")):
        items = parse_qa(reply)[: s.questions_per_section]
        if not items:
            report.generated["answerable"] += 1
            report.dropped["unparsable"] += 1
        seen: set[str] = set()
        for item in items:
            item["key_facts"] = key_facts_in_source(item, p.text)
            if not item["key_facts"]:
                report.generated["answerable"] += 1
                report.dropped["fact_not_in_source"] += 1
            elif _screen([item["question"]], item["key_facts"], report, seen):
                if not all(contains_fact(item["answer"], f) for f in item["key_facts"]):
                    # The reference must state the fact; the source sentence that holds it does.
                    item["answer"] = _sentence_with(p.text, item["key_facts"][0]) or item["key_facts"][0]
                candidates.append((p, item))
    replies = (ask([reword_prompt(item["question"], s.wordings - 1) for _, item in candidates], "rewordings")
               if s.wordings > 1 and candidates else [""] * len(candidates))
    facts = []
    for (p, item), reply in zip(candidates, replies):
        more = _screen(parse_lines(reply)[: s.wordings - 1], item["key_facts"], report, {normalize(item["question"])})
        facts.append((p, item, [item["question"]] + more))
    return facts


def fact_sentences(p: Passage, limit: int) -> list[tuple[str, list[str]]]:
    """Up to `limit` sentences of a passage that state a number (an amount, a duration, a time), with those
    numbers as key facts: the facts and the reference answer are right by construction, only the question
    is left to a small model."""
    out = []
    for block in p.text.split("\n"):
        for sent in quick_sentences(block.strip().lstrip("-*+> ").strip()):
            facts = list(dict.fromkeys(m.group(0).strip(" .,;:") for m in NUMBER_FACT.finditer(sent)))
            facts = [f for f in facts if contains_fact(p.text, f)][:2]
            if facts and 5 <= len(sent.split()) <= 45 and "|" not in sent:
                out.append((sent.strip(), facts))
    return out[:limit]


def _from_sentences(found: list[Passage], ask: CachedGenerations, s: GeneratorSettings,
                    report: Report) -> list[tuple[Passage, dict, list[str]]]:
    """A small local model: the fact and the answer come from a source sentence, the model only writes
    the question, once per few-shot example, so each fact gets several wordings."""
    todo = [(p, sent, facts) for p in found for sent, facts in fact_sentences(p, s.questions_per_section)]
    n = min(s.wordings, len(SHOTS))
    replies = ask([sentence_prompt(sent, i) for _, sent, _ in todo for i in range(n)], "questions")
    facts = []
    for j, (p, sent, key_facts) in enumerate(todo):
        asked = [first_question(r) for r in replies[j * n:(j + 1) * n]]
        report.generated["answerable"] += sum(not q for q in asked)
        report.dropped["unparsable"] += sum(not q for q in asked)
        kept = _screen([q for q in asked if q], key_facts, report)
        if kept:
            facts.append((p, {"question": kept[0], "answer": sent, "key_facts": key_facts}, kept))
    return facts


# Few-shot examples for the sentence mode: each one a different way of asking, so the wordings differ.
SHOTS = [("Standard shipping takes 3 to 5 business days.", "How long does standard shipping take?"),
         ("Orders over $50 ship free within the country.", "Do I get free delivery if I spend more than 50 dollars?"),
         ("Our stores open at 9 am on weekdays.", "What time can I come to the shop on a Monday?"),
         ("A repair of the zip costs 15 euros.", "What would you charge me to fix a broken zip?"),
         ("Members earn 2 points per euro spent.", "How many points do members get for each euro?"),
         ("Refunds reach your card within 10 days.", "When will I see the refund on my card?")]


def sentence_prompt(sentence: str, shot: int) -> Messages:
    ask = "Write one question a customer would ask that this text answers.\nText: "
    example, question = SHOTS[shot % len(SHOTS)]
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": f'{ask}"{example}"'}, {"role": "assistant", "content": question},
            {"role": "user", "content": f'{ask}"{sentence}"'}]


def first_question(reply: str) -> str:
    """The first line of a reply that reads as a question, or ''."""
    found = parse_lines(reply)
    return found[0] if found else ""


# -- the whole run --------------------------------------------------------------------------------
def _fact_splits(fact_ids: list[str], test_only: float) -> dict[str, str]:
    """Which facts are asked only in test, chosen by the importer's stable split rule."""
    rows = [{"fact_id": f, "question": f, "split": "", "kind": "answerable"} for f in fact_ids]
    assign_splits(rows, test_only, 0.0)
    return {r["fact_id"]: r["split"] for r in rows}


def generate_questions(corpus: Corpus, generator: Generator | None = None) -> tuple[list[QAItem], Report]:
    """Generate, validate and split a question set from the corpus's documents."""
    s = corpus.config.generator
    generator = generator or open_generator(corpus)
    ask = CachedGenerations(corpus.runs.questions / "generations.jsonl", generator)
    report = Report(generator.name)
    found = passages(corpus, s.section_words)
    if not found:
        raise UsageError(f"{corpus.root / 'docs'}: no section with text to ask about; add documents")

    sentence_mode = s.mode == "sentence" or (s.mode == "auto" and not s.base_url)
    facts = (_from_sentences if sentence_mode else _from_passages)(found, ask, s, report)

    # 3. each wording must retrieve its own section
    flat = [(w, p) for p, _, ws in facts for w in ws]
    ok = iter(retrieves_source(corpus, flat, s.top_k))
    rows: list[dict] = []
    for n, (p, item, wordings) in enumerate(facts):
        kept = []
        for w in wordings:
            if next(ok):
                kept.append(w)
            else:
                report.dropped["not_retrieved"] += 1
        fact_id = f"gen-{p.id}-{n:04d}"
        rows += [{"id": f"{fact_id}-{chr(97 + i)}", "question": w, "answer": item["answer"],
                  "key_facts": item["key_facts"], "source": p.path, "fact_id": fact_id, "kind": "answerable"}
                 for i, w in enumerate(kept)]

    # 4. split by fact, then drop held-out wordings that repeat a train wording
    fact_split = _fact_splits(sorted({r["fact_id"] for r in rows}), s.test_only_fraction)
    order = Counter()
    for r in rows:
        i = order[r["fact_id"]]
        order[r["fact_id"]] += 1
        r["split"] = "test" if fact_split[r["fact_id"]] == "test" else ("train", "test", "val")[i] if i < 3 else "train"
    leaked = leaks([r["question"] for r in rows], [r["split"] for r in rows], corpus.config.retrieval.embedder)
    report.dropped["near_duplicate"] += sum(leaked)
    rows = [r for r, bad in zip(rows, leaked) if not bad]
    report.kept["answerable"] = len(rows)

    # 5. questions no document answers
    if s.unanswerable:
        headings = list(dict.fromkeys(p.heading for p in found))
        if sentence_mode:  # one question per document topic, each from a one-shot prompt
            topics = list(dict.fromkeys(h.split(" > ")[0] for h in headings))
            replies = ask([unanswerable_shot(corpus, t, [h for h in headings if h.startswith(t)])
                           for t in topics[: s.unanswerable]], "unanswerable")
            asked = [q for q in map(first_question, replies) if q]
        else:
            reply = ask([unanswerable_prompt(corpus, headings, s.unanswerable)], "unanswerable")[0]
            asked = list(dict.fromkeys(parse_lines(reply)))[: s.unanswerable]
        report.generated["unanswerable"] += max(len(asked), 1)
        if not asked:
            report.dropped["unparsable"] += 1
        known = {normalize(r["question"]) for r in rows}
        good = unanswerable_ok(corpus, asked, s.unanswerable_max_score)
        for i, (q, fine) in enumerate(zip(asked, good)):
            if not fine:
                report.dropped["answered_by_docs"] += 1
            elif normalize(q) in known:
                report.dropped["near_duplicate"] += 1
            else:
                known.add(normalize(q))
                key = hashlib.sha256(q.encode()).hexdigest()[:8]
                rows.append({"id": f"gen-un-{key}", "question": q, "answer": UNANSWERED, "key_facts": [],
                             "source": "", "fact_id": f"gen-un-{key}", "split": "test", "kind": "unanswerable"})
                report.kept["unanswerable"] += 1
    items = [QAItem(**r, origin="synthetic", generator=generator.name) for r in rows]
    return items, report


def augment(corpus: Corpus, items: list[QAItem], n: int, generator: Generator | None = None) -> tuple[list[QAItem], Report]:
    """N rewordings of each answerable train question (same answer, fact and split), origin `augmented`.
    A rewording is dropped when it repeats a question, states its own answer, asks something else,
    does not retrieve the question's source document, or repeats a val/test question."""
    generator = generator or open_generator(corpus)
    ask = CachedGenerations(corpus.runs.questions / "generations.jsonl", generator)
    report = Report(generator.name)
    train = [q for q in items if q.split == "train" and q.kind == "answerable" and q.origin != "augmented"]
    if not train or n <= 0:
        return [], report
    held = [q.question for q in items if q.split != "train"]
    taken = {normalize(q.question) for q in items}
    s = corpus.config.generator
    new: list[QAItem] = []
    if s.mode == "sentence" or (s.mode == "auto" and not s.base_url):
        # A small model rewords poorly; asked for a question from the reference answer with another
        # few-shot example each time, it writes new wordings of the same question.
        # The examples not used for the generated wordings come first: the used ones give them back.
        k, first = min(n + 1, len(SHOTS)), min(s.wordings, len(SHOTS))
        replies = ask([sentence_prompt(q.answer, (first + i) % len(SHOTS)) for q in train for i in range(k)],
                      "augmenting")
        per_question = ["\n".join(replies[j * k:(j + 1) * k]) for j in range(len(train))]
    else:
        per_question = ask([reword_prompt(q.question, n) for q in train], "augmenting")
    # Every candidate is checked in one batch; then each question keeps its first n that pass.
    candidates = [(q, w) for q, reply in zip(train, per_question) for w in parse_lines(reply)]
    flags = reword_checks(corpus, candidates, held)
    counts: Counter = Counter()
    for (q, w), flag in zip(candidates, flags):
        if counts[q.id] == n:
            continue
        report.generated["augmented"] += 1
        if normalize(w) in taken:
            reason = "near_duplicate"
        elif any(contains_fact(w, f) for f in q.key_facts):
            reason = "answer_in_question"
        else:
            reason = flag
        if reason:
            report.dropped[reason] += 1
            continue
        taken.add(normalize(w))
        counts[q.id] += 1
        new.append(q.model_copy(update={"id": f"{q.id}-aug{counts[q.id]}", "question": w, "origin": "augmented",
                                        "generator": generator.name}))
    report.kept["augmented"] = len(new)
    return new, report


def reword_checks(corpus: Corpus, candidates: list[tuple[QAItem, str]], held: list[str]) -> list[str | None]:
    """Why each (question, rewording) pair fails, or None: `off_question` when the rewording asks
    something else (MiniLM cosine to the question below `generator.reword_min_similarity`),
    `not_retrieved` when it does not retrieve the question's source document in the top
    `generator.top_k`, `near_duplicate` when it repeats a val/test question (the leakage guard)."""
    if not candidates:
        return []
    s = corpus.config.generator
    words = [w for _, w in candidates]
    # Each distinct text embedded once: a question has several candidates, a rewording may recur.
    texts = list(dict.fromkeys([q.question for q, _ in candidates] + words + held))
    emb = embed(load_embedder(corpus.config.retrieval.embedder), texts)
    row = {t: i for i, t in enumerate(texts)}
    q_emb, w_emb = emb[[row[q.question] for q, _ in candidates]], emb[[row[w] for w in words]]
    same = (q_emb * w_emb).sum(axis=1) >= s.reword_min_similarity
    leaked = _repeats(words, w_emb, held, emb[[row[h] for h in held]]) if held else [False] * len(words)
    sourced = [(i, w, q.source) for i, (q, w) in enumerate(candidates) if q.source]
    hits = _retriever(corpus).search_many([w for _, w, _ in sourced], s.top_k) if sourced else []
    retrieved = {i: any(h.path == src for h in found) for (i, _, src), found in zip(sourced, hits)}
    return ["off_question" if not same[i] else "not_retrieved" if not retrieved.get(i, True)
            else "near_duplicate" if leaked[i] else None for i in range(len(candidates))]


# -- files ----------------------------------------------------------------------------------------
REVIEW_FIELDS = ("id", "question", "answer", "key_facts", "source", "fact_id", "split", "kind", "origin",
                 "generator", "source_text")


def review_csv(items: list[QAItem], corpus: Corpus) -> str:
    """A sheet to read and edit: `assistant import SHEET OUT --docs CORPUS/docs` reads it back."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(REVIEW_FIELDS)
    for q in items:
        doc = corpus.document(q.source) if q.source else None
        excerpt = _sentence_with(doc.text, q.key_facts[0]) if doc and q.key_facts else ""
        w.writerow([q.id, q.question, q.answer, "|".join(q.key_facts), q.source, q.fact_id, q.split, q.kind,
                    q.origin or "", q.generator or "", excerpt])
    return buf.getvalue()


def _hand_written(path: Path) -> bool:
    rows = read_jsonl(path)
    return bool(rows) and any(r.get("origin") not in ("synthetic", "augmented") for r in rows)


def output_path(corpus: Corpus, out: str | None, force: bool) -> Path:
    """qa.jsonl when there is none (or it is generated), qa.generated.jsonl beside a hand-written one."""
    if out:
        path = Path(out)
        if path.exists() and _hand_written(path) and not force:
            raise UsageError(f"{path} holds hand-written questions; pass --force to overwrite it, or another --out")
        return path
    qa = corpus.root / "qa.jsonl"
    if force or not qa.exists() or not _hand_written(qa):
        return qa
    return corpus.root / "qa.generated.jsonl"


def run_questions(corpus: Corpus, out: str | None = None, force: bool = False, augment_n: int = 0,
                  augment_only: bool = False) -> dict:
    """`assistant questions CORPUS`: generate (or, with augment_only, take the corpus's QA set), augment,
    validate, write the QA file, the review sheet and `runs/<corpus>/questions/report.json`."""
    generator = open_generator(corpus)
    if augment_only:
        if not corpus.qa:
            raise UsageError(f"{corpus.qa_path}: no questions to augment; run `assistant questions "
                             f"{corpus.root}` first or drop --augment-only")
        if augment_n <= 0:
            raise UsageError("--augment-only needs --augment N with N >= 1")
        items, report = list(corpus.qa), Report(generator.name)
        path = Path(out) if out else corpus.root / "qa.augmented.jsonl"
        if path.resolve() == corpus.qa_path.resolve() and not force:
            raise UsageError(f"{path} is the corpus's QA set; pass --force to overwrite it, or another --out")
    else:
        items, report = generate_questions(corpus, generator)
        path = output_path(corpus, out, force)
    if augment_n > 0:
        extra, aug = augment(corpus, items, augment_n, generator)
        items += extra
        report.generated.update(aug.generated)
        report.dropped.update(aug.dropped)
        report.kept.update(aug.kept)
    summary = {**report.to_dict(), "written": None, "review_sheet": None, "augment": augment_n,
               "splits": dict(Counter(f"{q.kind}/{q.split}" + ("/augmented" if q.origin == "augmented" else "")
                                      for q in items))}
    stats = corpus.runs.questions / "report.json"
    if not items:
        atomic_write_json(stats, summary)
        raise AssistantError(f"no question passed validation ({_summary(summary)}); try a stronger "
                             f"generator under `generator:` in corpus.yaml (counts in {stats})")
    atomic_write_text(path, "".join(q.model_dump_json() + "\n" for q in items))
    sheet = path.with_suffix(".review.csv")
    atomic_write_text(sheet, review_csv(items, corpus))
    summary.update(written=str(path), review_sheet=str(sheet))
    atomic_write_json(stats, summary)
    return summary


def _summary(r: dict) -> str:
    dropped = ", ".join(f"{k} {v}" for k, v in r["dropped"].items()) or "none"
    return (f"generated {sum(r['generated'].values())}, kept {sum(r['kept'].values())} "
            f"({100 * r['kept_share']:.0f}%), dropped: {dropped}")
