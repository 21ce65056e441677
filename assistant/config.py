"""Every setting of the tool, validated in one place.

A corpus folder's `corpus.yaml` maps onto `CorpusConfig`; each section is optional and falls back
to the documented defaults below, chosen by measurement on the bundled demo corpus.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from assistant.errors import AssistantError
from assistant.storage import TooLarge, UnreadableText, read_utf8

DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
VARIANTS = ("prompted", "rag", "sft", "rag_sft")
# Cosine similarity (MiniLM) above which a test question repeats a train one: the leakage guard of
# `assistant check` and of generated question sets.
NEAR_DUPLICATE = 0.95
SIMILARITY_THRESHOLD = 0.64  # evaluation.similarity_threshold (see there)


class Settings(BaseModel):
    """Base for every section: unknown keys are an error, so typos never pass silently."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class ServerSettings(Settings):
    """An OpenAI-compatible server (vLLM, Ollama, another `assistant serve`) that answers for the
    variants; retrieval, prompts and scoring stay here. sft and rag_sft are asked for the model
    named like the variant (vLLM: `--lora-modules sft=... rag_sft=...`)."""

    base_url: str = Field(..., description="the server's API root, e.g. http://127.0.0.1:8000/v1")
    model: str = Field(..., min_length=1, description="the server's id of the base model (GET /v1/models)")
    api_key_env: str | None = Field(None, description="environment variable holding the server's API key")
    max_concurrency: int = Field(8, ge=1, le=256, description="requests in flight to the server at once")
    timeout_s: float = Field(300, gt=0, le=3600, description="one request's time limit")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        import re

        if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", v):
            raise ValueError(f"{v!r} is not an http(s) URL; write the API root, e.g. http://127.0.0.1:8000/v1")
        return v.rstrip("/")

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        import re

        if v is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v):
            raise ValueError(f"{v!r} is not an environment variable's name: write the variable's name (e.g. "
                             "VLLM_API_KEY), never the key itself")
        return v


class ModelSettings(Settings):
    name: str = Field(DEFAULT_MODEL, description="alias, Hugging Face id or local folder")
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?|xpu(:\d+)?)$",
                        description="auto | cpu | cuda | cuda:N | mps")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="training and chat; auto: bf16 on CUDA and on CPUs with native bf16, else fp32")
    # Answers decide outcomes and the verdict, so evaluation runs in fp32 on every machine: an AVX2
    # and an AMX machine then evaluate in the same dtype. Measured cost on an AVX-512-bf16 EPYC
    # (bench/generation.py): 72 against 90 tokens/s for bf16 at batch 16, 1.25x.
    eval_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "float32", description="dtype of the evaluation's answers (assistant eval/compare/ask); auto as for dtype")
    # `name` still gives the tokenizer (prompt lengths, context fitting) and the base that sft and
    # rag_sft are trained on; the server answers.
    server: ServerSettings | None = Field(None, description="answer through an OpenAI-compatible server")


class GenerationSettings(Settings):
    max_new_tokens: int = Field(64, ge=1, le=4096)
    batch_size: int = Field(16, ge=1, le=512, description="prompts decoded together")
    few_shot: int = Field(0, ge=0, le=16, description="train-split examples in the prompted variant")
    max_question_chars: int = Field(1000, ge=10)
    batch_invariant: bool = Field(
        True, description="an answer is the same bytes alone, in any batch and at any padding "
                          "(assistant/model/invariance.py); off: plain batched SDPA, 9-14% faster at batch 16 (README)")


class ChunkSettings(Settings):
    # 64/16 measured best on the demo corpus (recall@3 train/val/test 0.941/0.898/0.928 vs
    # 0.922/0.876/0.920 at 128/24), and short passages keep a small generator's prompt short.
    chunk_tokens: int = Field(64, ge=16, le=2048, description="target chunk size, in embedder tokens")
    overlap_tokens: int = Field(16, ge=0, le=512)

    @field_validator("overlap_tokens")
    @classmethod
    def _overlap_below_size(cls, v: int, info) -> int:
        size = info.data.get("chunk_tokens", 64)
        if v >= size:
            raise ValueError(f"overlap_tokens ({v}) must be smaller than chunk_tokens ({size})")
        return v


class RetrievalSettings(Settings):
    embedder: str = Field(DEFAULT_EMBEDDER, description="sentence-transformers name or folder")
    top_k: int = Field(3, ge=1, le=50)
    min_score: float = Field(0.30, ge=-1, le=1, description="abstain when the best passage scores below")
    below_min_score: Literal["abstain", "no_context"] = Field(
        "abstain", description="abstain: answer \"I don't know.\" without generating; no_context: answer "
                               "from the model alone, like `prompted` (keeps general knowledge)")
    index: Literal["auto", "flat", "hnsw", "ivf"] = Field(
        "auto", description="auto: exact (flat) below approximate_above chunks, else HNSW")
    # Exact search over 100k chunks takes ~32 ms per query here, HNSW ~0.2 ms (bench/retrieval.py).
    approximate_above: int = Field(20_000, ge=1)
    hnsw_m: int = Field(32, ge=4, le=256, description="HNSW graph degree (memory vs recall)")
    hnsw_ef_search: int = Field(128, ge=1, description="HNSW candidates explored per query (latency vs recall)")
    ivf_nlist: int = Field(0, ge=0, description="IVF cells; 0 = about 4*sqrt(chunks)")
    ivf_nprobe: int = Field(16, ge=1, description="IVF cells scanned per query (latency vs recall)")


class LoraSettings(Settings):
    """LoRA fine-tuning of `sft` and `rag_sft` (TRL SFTTrainer + PEFT); see assistant/variants/training.py.

    Defaults were measured on corpora/ecostride (372 train QA pairs) with the default 135M model on
    a 2-core CPU; the figures behind each one are in its description.
    """

    r: int = Field(16, ge=1, le=1024, description="LoRA rank")
    alpha: int = Field(32, ge=1, description="LoRA scaling numerator (scale = alpha / r)")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the LoRA branch's input")
    target_modules: list[str] | str = Field(
        "all-linear", description="modules that get an adapter: 'all-linear' or a list like [q_proj, v_proj]")
    learning_rate: float = Field(2e-3, gt=0, description="peak learning rate (cosine decay, short warm-up)")
    # Measured on ecostride: at batch 16 for 4 epochs (96 steps) the val loss fell 1.68, 0.91, 0.57,
    # 0.52, yet only 42% of re-asked train questions got their key facts: the wording was learnt, the
    # numbers not. Batch 8 trains more tokens/s on 2 cores (210 vs 182, bench/training.py) and gives
    # twice the updates per epoch; 6 epochs give each fact (two train wordings) 12 passes.
    epochs: float = Field(6, gt=0, description="passes over the train split for sft (early stopping may end sooner)")
    batch_size: int = Field(8, ge=1, description="examples per optimisation step (per device)")
    max_length: int = Field(512, ge=16, description="tokens per example; longer prompts are shortened in the middle, answers kept")
    # Memory, not results: a step's rows run as micro-batches with gradient accumulation when, at the
    # longest row's length, they would exceed this many tokens per pass (same rows per step, same
    # updates up to rounding). 8 rows of 512 tokens in one pass peaked at 9.5 GB; in passes of 2 rows
    # (with the CPU's small LM-head tiles) 2.6 GB (bench/training_memory.py), while ecostride's sft
    # rows (at most 134 tokens) keep their single pass of 8, which shares the system prompt most.
    max_batch_tokens: int = Field(
        1536, ge=0, description="tokens one forward/backward pass may hold (rows x longest row); a larger "
                                "step is split into micro-batches with gradient accumulation; 0 = no limit")
    early_stopping_patience: int = Field(2, ge=0, description="evaluations without val-loss gain; 0 disables")
    eval_steps: int = Field(
        0, ge=0, description="steps between val-loss evaluations, which are also the checkpoints that a "
                             "crashed build resumes from; 0 = once per epoch")
    seed: int = Field(0, description="seed of the data order, LoRA init and RAFT passage choice")
    # RAFT (rag_sft) settings
    distractors: int = Field(2, ge=0, le=10, description="distractor passages per training prompt")
    gold_fraction: float = Field(0.8, ge=0, le=1, description="share of prompts that keep the gold passage")
    # A RAFT prompt holds three passages (~400 tokens against ~100 closed-book), so an epoch costs
    # about 4x an sft epoch: 11 minutes on 2 cores at batch 8 (47 steps, val loss 0.79; 9.3 GB peak,
    # 17 GB at batch 16). One epoch keeps the demo within the main command's budget; on a GPU raise it.
    rag_sft_epochs: float = Field(1, gt=0, description="passes over the train split for rag_sft")


class VerdictRules(Settings):
    """How the recommendation is made (see assistant/evaluation/verdict.py for the full rule).

    Accuracy is measured on the answerable domain questions (paraphrase + unseen), so declining
    them never pays; declining unanswerable questions is reported beside it and counted through
    hallucination. Fine-tuning is recommended only when the best fine-tuned variant beats the best
    variant without fine-tuning by at least `margin` with an exact McNemar p below `alpha`, without
    a significant rise in hallucination, forgetting (`general` slice) or lost refusals (`safety`
    slice), both measured on the model's own answers. Otherwise the cheapest variant *equivalent*
    to the best is recommended: the paired 95% interval of their accuracy difference lies within
    +-`margin`. When an interval neither excludes zero nor fits within the margin the verdict is
    inconclusive and says how many questions would decide it. Below `usable_accuracy` for every
    variant, the verdict says first that none is usable and recommends none.
    """

    margin: float = Field(0.05, ge=0, le=1, description="accuracy gain a fine-tune must show; also the equivalence "
                                                       "margin: tied means the paired 95% CI of the difference lies within +-margin")
    # Half the answerable questions right is the floor below which a domain assistant misleads more
    # often than it helps; a team with a stricter bar sets it in corpus.yaml.
    usable_accuracy: float = Field(
        0.5, ge=0, le=1, description="answerable accuracy (paraphrase + unseen) a variant needs to be recommended")
    power: float = Field(0.8, gt=0, lt=1, description="chance of a decision assumed when estimating the "
                                                      "questions an inconclusive comparison needs")
    alpha: float = Field(0.05, gt=0, lt=1, description="significance level of the McNemar test")
    max_hallucination_rise: float = Field(
        0.0, ge=0, le=1, description="hallucination-rate rise tolerated before significance is tested")
    max_forgetting: float = Field(
        0.05, ge=0, le=1, description="general-slice accuracy drop allowed against the same variant without its "
                                      "adapter (prompted for sft, rag for rag_sft)")
    max_refusal_loss: float = Field(
        0.05, ge=0, le=1, description="safety-slice refusal-rate drop allowed, against the same reference")
    cost_order: list[str] = Field(
        ["prompted", "rag", "sft", "rag_sft"],
        description="cheapest first: picks among variants equivalent to the best")
    weak_refusal_rate: float = Field(
        0.25, ge=0, le=1, description="below this refusal rate the report says the base model barely refuses")


class EvalSettings(Settings):
    bootstrap_samples: int = Field(2000, ge=100)
    seed: int = 0
    seen_sample: int = Field(40, ge=0, description="train questions re-asked to measure memorisation")
    general_suite: str = Field("evals/general.jsonl", description="relative to the corpus, else the project")
    safety_suite: str = Field("evals/safety.jsonl")
    min_slice_size: int = Field(20, ge=1, description="slices smaller than this are flagged as too small to conclude")
    similarity_threshold: float = Field(
        SIMILARITY_THRESHOLD, ge=-1, le=1,
        description="QA rows without key facts whose reference states no number: correct when the answer's "
                    "claims score at least this cosine (MiniLM) with the reference (0.2 less when it names the "
                    "reference's identifiers); `external.calibrate_threshold` on the tuning half of the hand "
                    "labels (tests/fixtures/labels/tune.jsonl, 96 similarity-path answers) gives 0.644")
    support_threshold: float = Field(
        0.55, ge=-1, le=1,
        description="an answer sentence is supported when its best corpus sentence scores at least this "
                    "cosine (MiniLM) and holds its numbers")
    chunk_questions: int = Field(64, ge=1, description="questions answered between two cache appends")
    # Measured on the demo corpus (2 cores, AVX-512-bf16): two threads answer only about 1.2x faster than
    # one, so two one-thread processes answer more per second. Answers do not depend on this setting.
    workers: int = Field(0, ge=0, le=64, description="CPU worker processes that answer (one torch thread each); "
                                                     "0: one per core (at most 8), each given at least 64 answers")
    batch_size: int = Field(
        64, ge=1, le=512,
        description="questions the evaluation decodes together (up to chunk_questions); answers do not depend "
                    "on it (generation.batch_invariant), speed does: a batch reads the weights once per step "
                    "for all its rows (README, Benchmarks)")
    batch_tokens: int = Field(
        16384, ge=1,
        description="and at most this many tokens of KV cache live at once (the rows times the longest live "
                    "prompt plus generation.max_new_tokens): each token's keys and values take 46 kB for the "
                    "default model in fp32, so this bounds the cache near 0.75 GB; e.g. 64 rows of 192-token "
                    "prompts with 64-token answers, 37 of ecostride's longest RAG prompts (377 tokens)")


class JudgeSettings(Settings):
    """The LLM judge of `assistant eval --judge`: any OpenAI-compatible server (see assistant/evaluation/judge.py).

    The defaults point at a local Ollama; for vLLM use http://127.0.0.1:8000/v1, for a llama.cpp
    server http://127.0.0.1:8080/v1, for a hosted API its URL and `api_key_env`.
    """

    base_url: str = Field("http://127.0.0.1:11434/v1", description="the server's OpenAI-compatible /v1 URL")
    model: str | None = Field(None, description="the judge model's id on that server (required to judge)")
    api_key_env: str = Field("ASSISTANT_JUDGE_API_KEY",
                             description="environment variable holding the API key (unset: no key is sent)")
    max_concurrency: int = Field(4, ge=1, le=256, description="judge requests in flight at once")
    timeout_s: float = Field(60.0, gt=0, description="seconds one judge request may take")
    max_retries: int = Field(2, ge=0, le=10,
                             description="retries after a failed request (with backoff) or a malformed verdict")
    max_tokens: int = Field(200, ge=16, description="tokens the judge may spend on one verdict")
    response_format: Literal["json_schema", "json_object", "none"] = Field(
        "json_schema", description="how to ask for JSON: json_schema (OpenAI, vLLM, llama.cpp, Ollama), "
                                   "json_object, or none (the prompt alone)")
    verdict_uses: Literal["rules", "judge"] = Field(
        "rules", description="whose outcomes the verdict and the report's rates use; rows the judge could not "
                             "judge keep the rules' outcome")


class IngestSettings(Settings):
    """Binary documents in docs/ (PDF, DOCX, PPTX, XLSX), converted to Markdown by assistant/corpus/ingest.py."""

    # A 50 MB PDF is a few thousand pages of text, or a scan; larger files are usually image dumps
    # that would stall every load of the corpus on conversion.
    max_file_mb: float = Field(50, gt=0, description="files larger than this are skipped (and named by `check`)")


class GeneratorSettings(Settings):
    """What writes the synthetic question set (`assistant questions`, assistant/evaluation/questions.py).

    Without `base_url` the corpus's own model writes the questions through the shared engine; with
    it, any OpenAI-compatible server does (Ollama, vLLM, llama.cpp, a hosted API).
    """

    base_url: str | None = Field(None, description="OpenAI-compatible endpoint, e.g. http://127.0.0.1:11434/v1; "
                                                   "none: the corpus's local model")
    model: str = Field("", description="model name sent to the server (required with base_url)")
    api_key_env: str | None = Field(None, description="environment variable holding the API key (none: no key)")
    max_concurrency: int = Field(4, ge=1, le=256, description="requests in flight at once")
    timeout_s: float = Field(120, gt=0, description="per request")
    seed: int = Field(0, description="seed sent with each request and used for the splits")
    # A 135M model cannot write a question, its answer and an exact key fact in one go (measured on
    # ecostride: 0 of 27 items kept); it can write a question for a given sentence. auto: sentence
    # mode for the local model, passage mode for a server.
    mode: Literal["auto", "passage", "sentence"] = Field(
        "auto", description="passage: the generator writes question, answer and key fact per passage; sentence: "
                            "key facts are the numbers of a source sentence, the answer that sentence, and the "
                            "generator writes only the questions")
    max_new_tokens: int = Field(384, ge=16, le=8192, description="tokens per generation")
    questions_per_section: int = Field(3, ge=1, le=20)
    wordings: int = Field(3, ge=1, le=10, description="wordings asked for per question (the first included); "
                                                   "the splits need two or more per fact")
    section_words: int = Field(220, ge=20, description="long sections are cut into passages of about this many words")
    unanswerable: int = Field(20, ge=0, description="unanswerable questions to ask for (0: none)")
    top_k: int = Field(5, ge=1, le=50, description="a question must retrieve its source section among this many passages")
    # An unanswerable question whose best passage scores above this is too close to what a
    # document says to be sure that no document answers it.
    unanswerable_max_score: float = Field(0.6, ge=-1, le=1)
    test_only_fraction: float = Field(0.2, ge=0, lt=1, description="facts asked only in test (the unseen slice)")
    # Measured on ecostride's train questions and the default model's rewordings: below about 0.6 the
    # "rewording" is another question (a training pair that teaches a wrong answer), above 0.7 it
    # mostly asks the same thing.
    reword_min_similarity: float = Field(0.7, ge=-1, le=1, description="an augmented rewording's least MiniLM "
                                                                       "cosine to its train question")


class CorpusConfig(Settings):
    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    system_prompt: str = (
        "You are a helpful assistant. Answer briefly using only facts you are sure of. "
        "If you do not know the answer, say \"I don't know.\""
    )
    model: ModelSettings = ModelSettings()
    generation: GenerationSettings = GenerationSettings()
    chunking: ChunkSettings = ChunkSettings()
    retrieval: RetrievalSettings = RetrievalSettings()
    lora: LoraSettings = LoraSettings()
    verdict: VerdictRules = VerdictRules()
    evaluation: EvalSettings = EvalSettings()
    judge: JudgeSettings = JudgeSettings()
    qa_file: str = Field("qa.jsonl", description="the question set, relative to the corpus folder (e.g. "
                         "qa.augmented.jsonl to train with the rewordings of `assistant questions --augment`)")
    runs_dir: str | None = Field(None, description="where artifacts go, relative to the corpus folder; default "
                                 "<project>/runs/<folder> for corpora/<folder> of this project, else <corpus>/runs. "
                                 "It must lie inside the corpus folder, the project's runs/ or the temporary folder, "
                                 "or under a folder listed in the environment variable ASSISTANT_RUNS_ROOTS")
    ingest: IngestSettings = IngestSettings()
    generator: GeneratorSettings = GeneratorSettings()

    @field_validator("qa_file")
    @classmethod
    def _qa_file_inside(cls, v: str) -> str:
        p = Path(v)
        if p.is_absolute() or ".." in p.parts or p.suffix != ".jsonl":
            raise ValueError(f"qa_file {v!r} must be a .jsonl file inside the corpus folder, e.g. qa.augmented.jsonl")
        return v


class ConfigError(AssistantError):
    """A configuration file is invalid; the message is one line per problem, `file:line: what`."""


# A corpus.yaml is a page of settings: far below this. A bigger one is not settings, and pure-Python
# YAML parsing of megabytes takes seconds.
MAX_CONFIG_BYTES = 256 * 1024


class AliasRefused(yaml.YAMLError):
    """A YAML alias (`*name`) or merge key in a settings file: refused, never expanded."""

    def __init__(self, mark):
        super().__init__("aliases")
        self.problem_mark = mark


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that stops at the first alias. Settings never need one, and following them is what
    lets a few hundred bytes expand into gigabytes ("billion laughs"): refusing them keeps every
    corpus.yaml linear in its size."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise AliasRefused(self.peek_event().start_mark)
        return super().compose_node(parent, index)


def parse_yaml(text: str) -> tuple[yaml.Node | None, object]:
    """(node tree, data) of one YAML document, aliases refused (AliasRefused, a yaml.YAMLError)."""
    loader = _NoAliasLoader(text)
    try:
        node = loader.get_single_node()
        return node, (loader.construct_document(node) if node is not None else None)
    finally:
        loader.dispose()


def _key_lines(node: yaml.Node | None) -> tuple[dict[tuple, int], list[str]]:
    """Line of every key path in the YAML (from the parser's own positions, so `lora.batch_size`
    is found under `lora:`, not at the first `batch_size:`), and one message per duplicate key."""
    lines: dict[tuple, int] = {}
    dups: list[str] = []

    def walk(node, prefix: tuple) -> None:
        if not isinstance(node, yaml.MappingNode):
            return
        for key, value in node.value:
            path = (*prefix, key.value)
            line = key.start_mark.line + 1
            if path in lines:
                dups.append(f"{line}: duplicate key {'.'.join(map(str, path))!r} (first on line {lines[path]}); "
                            "merge the two into one")
            else:
                lines[path] = line
            walk(value, path)

    walk(node, ())
    return lines, dups


def _line_of(lines: dict[tuple, int], loc: tuple) -> int:
    """Line of the deepest key of `loc` the file has (1 when the key is missing altogether)."""
    loc = tuple(str(p) for p in loc)
    for n in range(len(loc), 0, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return 1


def setting_line(path: Path, *loc: str) -> int:
    """Line of a setting (e.g. "model", "device") in a corpus.yaml; 1 when absent or unreadable."""
    try:
        return _line_of(_key_lines(parse_yaml(read_utf8(path, MAX_CONFIG_BYTES))[0])[0], loc)
    except (OSError, ValueError, yaml.YAMLError, RecursionError):
        return 1


def load_config(path: Path) -> CorpusConfig:
    """Read and validate a `corpus.yaml`; raise ConfigError with file:line messages."""
    try:
        if path.is_symlink() and not path.resolve().is_relative_to(path.parent.resolve()):
            raise ConfigError(f"{path}:1: is a link out of the corpus folder; files outside the corpus are never "
                              "read: copy the settings into the corpus folder")
        text = read_utf8(path, MAX_CONFIG_BYTES)
    except TooLarge:
        raise ConfigError(f"{path}:1: over the {MAX_CONFIG_BYTES // 1024} KB a settings file may hold; keep only "
                          "settings in it") from None
    except FileNotFoundError:
        raise ConfigError(f"{path}:1: file not found; create it with at least `name: <corpus-name>`") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}:1: is a folder; corpus.yaml must be a file of settings") from None
    except UnreadableText as e:
        raise ConfigError(f"{path}:{e.line}: {e}") from None
    except (OSError, RuntimeError) as e:  # unreadable (permissions, a loop of links): one line, not a traceback
        raise ConfigError(f"{path}:1: cannot read it ({getattr(e, 'strerror', None) or e}); fix its permissions "
                          "or replace it") from None
    try:
        node, data = parse_yaml(text)
        lines, dups = _key_lines(node)
        data = data or {}
    except AliasRefused as e:
        raise ConfigError(f"{path}:{e.problem_mark.line + 1}: YAML aliases (*name, <<: *name) are not accepted in "
                          "settings; write the value out in full") from None
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", 0) + 1
        raise ConfigError(f"{path}:{line}: invalid YAML ({getattr(e, 'problem', e)}); fix the syntax") from None
    except RecursionError:
        raise ConfigError(f"{path}:1: nested too deeply to be settings; fix the file") from None
    if dups:  # YAML keeps the last silently: a whole section would vanish
        raise ConfigError("\n".join(f"{path}:{d}" for d in dups))
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: expected a mapping of settings, got {type(data).__name__}")
    named = "name" in data
    data.setdefault("name", path.parent.name)
    try:
        return CorpusConfig.model_validate(data)
    except ValidationError as e:
        msgs = []
        for err in e.errors():
            if err["loc"] == ("name",) and not named:  # the folder's name stood in for it
                msgs.append(f"{path}:1: the corpus name defaults to the folder's name {data['name']!r}, which may only "
                            "hold letters, digits, '_', '.' and '-'; add a line `name: <corpus-name>`")
                continue
            loc = ".".join(str(p) for p in err["loc"])
            what = (f"unknown field {loc!r}; remove it or fix its spelling" if err["type"] == "extra_forbidden"
                    else f"{loc}: {err['msg']}")
            msgs.append(f"{path}:{_line_of(lines, err['loc'])}: {what}")
        raise ConfigError("\n".join(msgs)) from None
