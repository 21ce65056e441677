"""`assistant serve`: the built variants behind an OpenAI-compatible API (FastAPI + uvicorn).

    GET  /v1/models             one model id per built variant (prompted, rag, sft, rag_sft)
    POST /v1/chat/completions   streaming (SSE) or not, several turns, max_tokens, stop, usage,
                                temperature, top_p, seed
    GET  /health                {"status": "ok", ...} (no key needed)
    GET  /metrics               Prometheus text: requests, tokens, queue depth, latency histograms

Every request field works or is refused with a 400 naming it (`unsupported`): `n` above 1,
`logprobs`, `tools`, `response_format` other than text and the like are refused, never ignored.

- A client's system and developer messages reach the model after the variant's own system prompt
  (`with_instructions`): the variant keeps its grounding rules, the client sets tone and language.
- `temperature` 0 or left out decodes greedily, as in the evaluation: alone in its batch a request
  gets exactly the answer of `assistant ask`. Above 0 the job samples (`sampling.Sampling`) from its
  own generator, seeded by `seed`: the same seed gives the same answer.
- An answer cites only passages it was given: any other "[n]" is removed (`cited_only`).
- Retrieval variants (`rag`, `rag_sft`) return the passages they were given in an extra top-level
  field `sources` ([{path, heading, text, score, rank}]) of the response, and of the last stream
  chunk (the one with `finish_reason`, which also carries `usage`). When retrieval finds nothing
  relevant the variant answers "I don't know." without generating (0 completion tokens).

Concurrent requests are decoded together by a `batching.Scheduler` (one batch, one LoRA adapter
per row); a full queue answers 429, a client that disconnects frees its row. Each request leaves
one line in the `assistant.access` log.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from assistant.model.batching import GATHER_MS, Job, QueueFull, Scheduler, Update
from assistant.model.engine import Messages
from assistant.model.sampling import Sampling
from assistant.config import VARIANTS
from assistant.corpus.corpus import Corpus
from assistant.errors import UsageError
from assistant.runtime import limit_malloc_arenas, release_freed_memory
from assistant.serve.lineup import Lineup, load_lineup
from assistant.serve.metrics import CONTENT_TYPE, Metrics, access_log
from assistant.variants import ABSTAIN_TEXT, Prompt, Variant

log = logging.getLogger(__name__)
API_KEY_ENV = "ASSISTANT_API_KEY"


@dataclass
class Limits:
    """What one request may ask for; beyond these the server answers 400 or 429."""

    max_tokens: int = 1024  # cap on max_tokens (the default is the corpus's generation.max_new_tokens)
    max_input_chars: int = 16_000  # all messages together
    max_question_chars: int | None = None  # the last user message; None = generation.max_question_chars
    max_queue: int = 64  # requests waiting for a batch; more get 429
    max_batch: int | None = None  # rows decoded together; None = the corpus's generation.batch_size
    gather_ms: float = GATHER_MS  # an idle server waits this long for company of a first request (batching.GATHER_MS)
    # A request body above this gets 413 before it is read: max_input_chars of text is at most
    # ~100 KB of JSON even with every character escaped, so 1 MiB leaves room without letting one
    # request hold gigabytes.
    max_body_bytes: int = 1024 * 1024

    def problems(self) -> list[str]:
        """One line per limit that makes no sense (0 or negative would silently turn a limit off)."""
        out = []
        for name, flag, least in (("max_tokens", "--max-tokens", 1), ("max_input_chars", None, 1),
                                  ("max_question_chars", "--max-question-chars", 1), ("max_queue", "--max-queue", 1),
                                  ("max_batch", "--max-batch", 1), ("max_body_bytes", "--max-body-bytes", 1024)):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < least):
                out.append(f"{flag or name} must be a whole number of at least {least}, got {value!r}")
        if isinstance(self.gather_ms, bool) or not isinstance(self.gather_ms, (int, float)) \
                or not 0 <= self.gather_ms <= 1000:
            out.append(f"--gather-ms must be a number of milliseconds from 0 to 1000, got {self.gather_ms!r}")
        return out


# -- the request body ---------------------------------------------------------------------------
class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    # Extra fields (name, tool_calls, ...) are kept so that `unsupported` can name them.
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text or "" for p in self.content)
        return self.content or ""


class ChatRequest(BaseModel):
    # Extra fields are kept, not dropped: each one either has a neutral value (NEUTRAL) or is
    # refused by name, so that no field a client sends is silently ignored.
    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: dict | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=-2**63, le=2**63 - 1)  # OpenAI's seed is a 64-bit integer
    stop: str | list[str] | None = None
    n: int | None = Field(None, ge=1)
    user: str | None = None  # written to the access log


# Fields of OpenAI's chat API this server does not implement, with the values that ask for nothing
# (what a client sends when it means "off"); any other value is a 400 naming the field, the first
# in this order (tools before tool_choice: the field to drop first).
NEUTRAL: dict[str, tuple] = {
    "tools": (None, []), "tool_choice": (None, "none"), "logprobs": (None, False), "top_logprobs": (None, 0),
    "functions": (None, []), "function_call": (None, "none"), "parallel_tool_calls": (None,),
    "response_format": (None, {"type": "text"}), "frequency_penalty": (None, 0, 0.0),
    "presence_penalty": (None, 0, 0.0), "logit_bias": (None, {}), "modalities": (None, ["text"]),
    "store": (None, False), "metadata": (None, {}), "audio": (None,), "prediction": (None,),
    "reasoning_effort": (None,), "service_tier": (None, "auto", "default"), "web_search_options": (None,),
}
MESSAGE_NEUTRAL: dict[str, tuple] = {"name": (None,), "tool_calls": (None, []), "function_call": (None,),
                                     "refusal": (None,), "audio": (None,), "tool_call_id": (None,)}


def unsupported(req: ChatRequest) -> ApiError | None:
    """The first request field this server would have to ignore, as a 400 naming it; else None."""
    extra = req.model_extra or {}
    for name in [*(n for n in NEUTRAL if n in extra), *(n for n in extra if n not in NEUTRAL)]:
        if name not in NEUTRAL:
            return ApiError(400, f"{name} is not a chat completions field this server knows; leave it out",
                            code="unsupported_parameter", param=name)
        if extra[name] not in NEUTRAL[name]:
            return ApiError(400, f"{name} is not supported by this server; leave it out",
                            code="unsupported_parameter", param=name)
    if req.n not in (None, 1):
        return ApiError(400, "n must be 1: this server returns one choice per request", param="n")
    if set(req.stream_options or {}) - {"include_usage"}:
        return ApiError(400, "stream_options may only hold include_usage (usage is always sent, in the last "
                             "chunk)", param="stream_options")
    for i, m in enumerate(req.messages):
        if m.role not in ("system", "developer", "user", "assistant"):
            return ApiError(400, f"messages[{i}].role {m.role!r} is not supported: this server has no tools; "
                                 "send system, developer, user or assistant messages", param=f"messages[{i}].role")
        for name, value in (m.model_extra or {}).items():
            if value not in MESSAGE_NEUTRAL.get(name, (None,)):
                return ApiError(400, f"messages[{i}].{name} is not supported by this server; leave it out",
                                code="unsupported_parameter", param=f"messages[{i}].{name}")
        for part in m.content if isinstance(m.content, list) else ():
            if part.type != "text" or part.text is None or part.model_extra:
                return ApiError(400, f"messages[{i}].content holds a {part.type!r} part: only text parts are "
                                     "supported", code="unsupported_parameter", param=f"messages[{i}].content")
    return None


def sampling_of(req: ChatRequest) -> Sampling:
    """`temperature` 0 or left out is greedy decoding, as in the evaluation (then top_p and seed
    change nothing); above 0, tokens are drawn from the request's own generator, seeded by `seed`."""
    return Sampling(req.temperature or 0.0, 1.0 if req.top_p is None else req.top_p, req.seed)


class ApiError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param


def split_turns(messages: Sequence[ChatMessage]) -> tuple[str, list[tuple[str, str]]]:
    """(last question, earlier (question, answer) pairs) from OpenAI messages; system and developer
    ones are `client_instructions`."""
    turns = [m for m in messages if m.role in ("user", "assistant")]
    if not turns or turns[-1].role != "user":
        raise ApiError(400, "the last message must come from the user", param="messages")
    history, pending = [], None
    for m in turns[:-1]:
        if m.role == "user":
            if pending is not None:
                raise ApiError(400, "two user messages in a row: earlier turns must alternate user, assistant",
                               param="messages")
            pending = m.text()
        else:
            if pending is None:
                raise ApiError(400, "an assistant message without the user message before it", param="messages")
            history.append((pending, m.text()))
            pending = None
    if pending is not None:
        raise ApiError(400, "two user messages in a row: earlier turns must alternate user, assistant",
                       param="messages")
    question = turns[-1].text().strip()
    if not question:
        raise ApiError(400, "the last user message is empty", param="messages")
    return question, history


def client_instructions(messages: Sequence[ChatMessage]) -> str:
    """The client's system and developer messages, in order, one paragraph each."""
    return "\n\n".join(t for m in messages if m.role in ("system", "developer") and (t := m.text().strip()))


def with_instructions(messages: Messages, instructions: str) -> Messages:
    """The variant's messages with the client's instructions after the variant's own system prompt.

    As OpenAI-compatible servers do, the client's system text reaches the model as its system
    message; the variant's grounding and abstention rules come first, so a client can change tone
    or language but the variant still answers from its passages and says when it does not know."""
    if not instructions:
        return messages
    if messages and messages[0]["role"] == "system":
        return [{"role": "system", "content": f"{messages[0]['content']}\n\n{instructions}"}, *messages[1:]]
    return [{"role": "system", "content": instructions}, *messages]


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _refuse_surrogates(req: ChatRequest) -> None:
    """JSON may spell a lone UTF-16 surrogate (`"\\ud800"`), which is no character: no tokenizer can
    encode it, so it is refused up front as the client's error, not met later as a server one."""
    stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    for where, text in [("model", req.model), *(("messages", m.text()) for m in req.messages),
                        *(("stop", x) for x in stops)]:
        if _has_surrogate(text):
            raise ApiError(400, f"{where} holds a lone UTF-16 surrogate (e.g. \\ud800), which is not text; send "
                                "valid Unicode", param=where)


def _stops(stop: str | list[str] | None) -> list[str]:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > 4:
        raise ApiError(400, "at most 4 stop sequences", param="stop")
    return [s for s in stops if s]


def visible_text(text: str, stops: Sequence[str], final: bool) -> str:
    """What may be shown of a growing answer: stripped like the final answer, holding back trailing
    whitespace, a half-decoded character and any tail that could still become a stop string."""
    text = text.lstrip()
    if final:
        return text.strip()
    text = text.rstrip().rstrip("\ufffd")
    hold = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                hold = max(hold, k)
                break
    text = text[:len(text) - hold].rstrip()
    return _OPEN_CITATION.sub("", text).rstrip()  # "[4" may become a citation to strip: wait for "]"


_CITATION = re.compile(r"\s*\[(\d+(?:\s*,\s*\d+)*)\]")
_OPEN_CITATION = re.compile(r"\[[\d,\s]*$")


def cited_only(text: str, sources: int) -> str:
    """`text` without citations to passages it was not given: "[n]" with n outside 1..sources goes
    (every one when no passage was given), and a list such as "[2, 5]" keeps its valid numbers."""
    def keep(m: re.Match) -> str:
        valid = [n for n in re.split(r"\s*,\s*", m.group(1)) if 1 <= int(n) <= sources]
        lead = m.group(0)[:m.group(0).index("[")]
        return f"{lead}[{', '.join(valid)}]" if valid else ""

    return _CITATION.sub(keep, text).strip()


# -- the service (no HTTP in here) --------------------------------------------------------------
@dataclass
class Ask:
    """A checked request: what the variant is asked and how to decode its answer."""

    variant: Variant
    question: str
    history: list[tuple[str, str]]
    instructions: str  # the client's system and developer messages
    max_new: int
    stops: list[str]
    sampling: Sampling


class Service:
    def __init__(self, corpus: Corpus, lineup: Lineup, limits: Limits | None = None, decode_thread: bool = True):
        self.corpus = corpus
        self.lineup = lineup
        self.limits = limits or Limits()
        if self.limits.problems():
            raise UsageError("\n".join(self.limits.problems()))
        engines = {id(v.engine): v.engine for v in lineup.variants.values()}
        if len(engines) > 1:
            raise UsageError("the served variants must share one engine")
        self.engine = next(iter(engines.values()), None)
        gen = corpus.config.generation
        # `serve` runs the decoding loop on its main thread (Scheduler.run); tests and benchmarks
        # that serve from a thread (ServerThread) let the scheduler start its own.
        self.scheduler = (Scheduler(self.engine, self.limits.max_batch or gen.batch_size, self.limits.max_queue,
                                    thread=decode_thread, gather_ms=self.limits.gather_ms)
                          if self.engine is not None else None)
        self._prompt_lock = threading.Lock()  # retrievers and tokenizers are not known to be thread-safe
        # Prompts are built one at a time anyway (the lock): one thread for them, not one of the
        # threadpool's forty, keeps their allocations in one place (see MemoryKeeper).
        self._prompt_pool = ThreadPoolExecutor(1, thread_name_prefix="prompt")
        self.memory = MemoryKeeper()
        self.metrics = Metrics(lambda: self.scheduler.pending.qsize() if self.scheduler else 0)
        self.created = int(time.time())

    def models(self) -> dict:
        return {"object": "list", "data": [{"id": n, "object": "model", "created": self.created,
                                            "owned_by": f"assistant:{self.corpus.name}"} for n in self.lineup.variants]}

    def variant(self, name: str) -> Variant:
        if name in self.lineup.variants:
            return self.lineup.variants[name]
        if name in VARIANTS:
            raise ApiError(404, f"model {name!r} is not built for corpus {self.corpus.name!r}; run: "
                                f"assistant build {self.corpus.root} --variant {name} (then restart the server)",
                           code="model_not_found", param="model")
        raise ApiError(404, f"unknown model {name!r}; this server has: {', '.join(self.lineup.variants) or 'none'}",
                       code="model_not_found", param="model")

    def check(self, req: ChatRequest) -> Ask:
        """Validate a request into what the variant needs, or raise ApiError naming the field."""
        _refuse_surrogates(req)
        variant = self.variant(req.model)
        refused = unsupported(req)
        if refused is not None:
            raise refused
        try:
            sampling = sampling_of(req)
        except ValueError as e:
            raise ApiError(400, str(e), param="top_p" if "top_p" in str(e) else "temperature") from None
        question, history = split_turns(req.messages)
        limit = self.limits.max_question_chars or self.corpus.config.generation.max_question_chars
        if len(question) > limit:
            raise ApiError(400, f"the question is {len(question)} characters, over the limit of {limit} "
                                "(generation.max_question_chars, or serve --max-question-chars)", param="messages")
        total = sum(len(m.text()) for m in req.messages)
        if total > self.limits.max_input_chars:
            raise ApiError(400, f"the messages hold {total} characters, over the limit of "
                                f"{self.limits.max_input_chars}; send fewer earlier turns", param="messages")
        asked = req.max_completion_tokens or req.max_tokens
        if asked is not None and asked > self.limits.max_tokens:
            raise ApiError(400, f"max_tokens {asked} is over this server's limit of {self.limits.max_tokens}",
                           param="max_tokens")
        max_new = asked or self.corpus.config.generation.max_new_tokens
        return Ask(variant, question, history, client_instructions(req.messages), max_new, _stops(req.stop),
                   sampling)

    def prompt(self, ask: Ask) -> tuple[Prompt, int]:
        """The variant's prompt with the client's instructions, and its length in tokens."""
        with self._prompt_lock:
            p = ask.variant.prompt(ask.question, ask.history)
            if p.messages is not None:
                p.messages = with_instructions(p.messages, ask.instructions)
            tokens = self.engine.count_tokens(self.engine.render(p.messages)) if p.messages is not None else 0
        context = getattr(getattr(self.engine, "model", None), "config", None)
        context = getattr(context, "max_position_embeddings", None)
        if context and tokens + ask.max_new > context:
            raise ApiError(400, f"the conversation is {tokens} tokens; with max_tokens {ask.max_new} it exceeds the "
                                f"model's context of {context}: send fewer earlier turns", param="messages")
        return p, tokens


# -- HTTP -------------------------------------------------------------------------------------
def _error_body(e: ApiError) -> dict:
    return {"error": {"message": e.message, "type": e.type, "param": e.param, "code": e.code}}


class SafeJSONResponse(JSONResponse):
    """JSON whose strings may hold a lone surrogate echoed from a request (a model name, a key in a
    422 message): written as the escape `\\ud800`, valid JSON, where Starlette's UTF-8 encoding
    would raise and turn any answer into a plain-text 500."""

    def render(self, content) -> bytes:
        return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode(
            "utf-8", "backslashreplace")


def _error_response(e: ApiError) -> SafeJSONResponse:
    return SafeJSONResponse(_error_body(e), status_code=e.status)


KNOWN_PATHS = ("/health", "/metrics", "/v1/models", "/v1/chat/completions")
UNAUTHORISED = ApiError(401, "missing or wrong API key: send the header 'Authorization: Bearer <key>'",
                        "authentication_error", "invalid_api_key")


class Gate:
    """Pure ASGI middleware in front of every route: the API key is checked on the headers alone, then
    the declared Content-Length, and only then is the body read, into memory, up to
    `max_body_bytes`, a body without a length (chunked) included. A stranger's request, or an
    oversized one, never costs more than its headers and that cap."""

    def __init__(self, app, api_key: str | None, max_body_bytes: int,
                 open_paths: tuple[str, ...] = ("/health", "/metrics"), after: Callable[[], None] | None = None,
                 metrics: Metrics | None = None):
        self.app, self.max_body, self.open_paths, self.after = app, max_body_bytes, open_paths, after
        self.key = api_key.encode("utf-8") if api_key else None
        self.metrics = metrics or Metrics()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        # The route writes what it learns (model, tokens, user) into the request's state, which is
        # this dict; the line and the metrics are written once the last byte has gone.
        state = scope.setdefault("state", {})
        state["t0"], status = time.perf_counter(), 0

        async def send_noting_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            return await self._gated(scope, receive, send_noting_status)
        finally:
            self._record(scope, state, status or 499)  # no status: the client left before any answer

    def _record(self, scope, state: dict, status: int) -> None:
        seconds = time.perf_counter() - state["t0"]
        path = scope["path"] if scope["path"] in KNOWN_PATHS else "other"
        self.metrics.record(path, status, seconds, state.get("model"), state.get("prompt_tokens", 0),
                            state.get("completion_tokens", 0), state.get("first_token_s"))
        client = scope.get("client") or ("-", 0)
        fields = " ".join(f"{k}={state[k]}" for k in ("model", "prompt_tokens", "completion_tokens", "finish_reason",
                                                     "user") if state.get(k) is not None)
        access_log.info('%s "%s %s" %d %.3fs%s', client[0], scope["method"], scope["path"], status, seconds,
                        f" {fields}" if fields else "")

    async def _gated(self, scope, receive, send):
        headers: dict[bytes, bytes] = {}
        for k, v in scope.get("headers", []):
            headers.setdefault(k.lower(), v)  # the first of repeated headers
        if self.key and scope["path"] not in self.open_paths:
            scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.key):
                return await _error_response(UNAUTHORISED)(scope, receive, send)
        too_large = ApiError(413, f"the request body is over this server's limit of {self.max_body} bytes",
                             code="request_too_large")
        declared = headers.get(b"content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                return await _error_response(ApiError(400, "invalid Content-Length header"))(scope, receive, send)
            if int(declared) > self.max_body:
                return await _error_response(too_large)(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:  # a chunked body, or one longer than it said
                return await _error_response(too_large)(scope, receive, send)
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the disconnect a streaming answer listens for

        try:
            return await self.app(scope, replay, send)
        finally:
            if self.after is not None and scope["method"] == "POST":
                await run_in_threadpool(self.after)


def create_app(service: Service, api_key: str | None = None):
    """The FastAPI application over a `Service`, behind the `Gate` (key and body size)."""
    # The schema and docs routes are behind the key like everything but /health (the Gate).
    app = FastAPI(title=f"assistant: {service.corpus.name}", docs_url=None, redoc_url=None,
                  default_response_class=SafeJSONResponse)

    @app.exception_handler(ApiError)
    async def _api_error(_, e: ApiError):
        return _error_response(e)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_, e: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'] if p != 'body') or 'body'}: {err['msg']}"
                             for err in e.errors())
        return _error_response(ApiError(422, f"invalid request body: {problems}"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_, e: StarletteHTTPException):
        return _error_response(ApiError(e.status_code, str(e.detail)))

    @app.exception_handler(Exception)
    async def _bug(_, e: Exception):  # still logged with its traceback by Starlette: it is a bug
        return _error_response(ApiError(500, f"internal error ({type(e).__name__}); see the server's log",
                                        "server_error"))

    @app.get("/health")
    async def health():
        sched = service.scheduler
        batches = list(sched.batches) if sched else []
        return {"status": "ok", "corpus": service.corpus.name, "models": list(service.lineup.variants),
                "batches": len(batches), "rows_decoded": sum(batches), "largest_batch": max(batches, default=0),
                "queued": sched.pending.qsize() if sched else 0}

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(service.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/models")
    async def models():
        return service.models()

    @app.get("/v1/models/{name}")
    async def model(name: str):
        service.variant(name)
        return next(m for m in service.models()["data"] if m["id"] == name)

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest, request: Request):
        state = request.state
        state.user = req.user
        ask = service.check(req)
        state.model = req.model
        prompt, prompt_tokens = await asyncio.get_running_loop().run_in_executor(service._prompt_pool,
                                                                                 service.prompt, ask)
        sources = [asdict(s) for s in prompt.sources]
        cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        state.prompt_tokens = prompt_tokens

        def shown(u: Update) -> str:
            return cited_only(visible_text(u.text, ask.stops, u.done), len(sources))

        def usage(u: Update) -> dict:
            state.completion_tokens, state.finish_reason = u.tokens, u.finish_reason
            return {"prompt_tokens": prompt_tokens, "completion_tokens": u.tokens,
                    "total_tokens": prompt_tokens + u.tokens}

        if prompt.messages is None:  # retrieval found nothing relevant: abstain without generating
            updates = None
        else:
            try:
                updates = service.scheduler.astream(Job(prompt.messages, ask.variant.adapter, ask.max_new, ask.stops,
                                                        sampling=ask.sampling))
            except QueueFull as e:
                raise ApiError(429, f"the server is busy: {e}", "rate_limit_error", "queue_full")
        abstained = Update(ABSTAIN_TEXT, 0, True, "stop")

        if not req.stream:
            final = await _final(updates, request) if updates is not None else abstained
            if final.finish_reason == "error":
                raise ApiError(500, f"generation failed: {final.error}", "server_error")
            return {"id": cid, "object": "chat.completion", "created": created, "model": req.model,
                    "choices": [{"index": 0, "finish_reason": final.finish_reason,
                                 "message": {"role": "assistant", "content": shown(final)}}],
                    "usage": usage(final), "sources": sources}

        def chunk(delta: dict, finish: str | None = None, **extra) -> str:
            body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": req.model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
            return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

        async def events() -> AsyncIterator[str]:
            yield chunk({"role": "assistant", "content": ""})
            sent = ""
            async for u in updates if updates is not None else _one(abstained):
                # A disconnect cancels this generator, whose exit cancels the job.
                text = shown(u)
                if text.startswith(sent) and len(text) > len(sent):
                    if not sent:
                        state.first_token_s = time.perf_counter() - state.t0
                    yield chunk({"content": text[len(sent):]})
                    sent = text
                if u.done:
                    if u.finish_reason == "error":
                        yield f"data: {json.dumps(_error_body(ApiError(500, f'generation failed: {u.error}', 'server_error')))}\n\n"
                        return
                    yield chunk({}, u.finish_reason, usage=usage(u), sources=sources)
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return Gate(app, api_key, service.limits.max_body_bytes, after=service.memory.after_request,
                metrics=service.metrics)


async def _final(updates: AsyncIterator[Update], request) -> Update:
    """The last update of a non-streaming request; a client that hangs up cancels its job."""
    task = asyncio.ensure_future(_last(updates))
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.5)
            if done:
                return task.result()
            if await request.is_disconnected():
                # Cancelling the task closes the generator, whose exit cancels the job; closing it
                # here as well, while the cancelled task still runs it, raised "aclose(): asynchronous
                # generator is already running" (a logged traceback per client that timed out).
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await updates.aclose()  # a no-op once the generator has finished
                raise ApiError(499, "client closed the request")
    finally:
        if not task.done():
            task.cancel()


async def _one(update: Update) -> AsyncIterator[Update]:
    yield update


async def _last(updates: AsyncIterator[Update]) -> Update:
    last = None
    async for u in updates:
        last = u
    return last


# -- memory -----------------------------------------------------------------------------------
class MemoryKeeper:
    """Keeps a long-running server's resident memory flat under glibc.

    Measured with bench/serve_soak.py (tiny model, 16 client threads, every question different):
    RSS grew by about 70 KB per request with no plateau in 600 requests, while tracemalloc saw under
    100 KB of Python objects grow in all. The growth is native: tensors of every new shape are freed
    into glibc's per-thread arenas (one per thread that ever ran the tokenizer, the embedder or a
    decoding step), whose free pages are not handed back to the system. Two calls fix it: at start,
    `mallopt(M_ARENA_MAX, 2)` keeps the threads that start later in two arenas; after requests,
    `malloc_trim(0)` (at most every `every_s` seconds, off the event loop) returns free pages. A
    no-op where the C library is not glibc."""

    def __init__(self, every_s: float = 2.0):
        self.every_s, self._last, self._lock = every_s, 0.0, threading.Lock()

    def after_request(self) -> None:
        """Trim, unless another thread is trimming or one did within every_s seconds."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            if time.monotonic() - self._last >= self.every_s:
                release_freed_memory()
                self._last = time.monotonic()
        finally:
            self._lock.release()


# -- running it -------------------------------------------------------------------------------
def open_service(corpus: Corpus, limits: Limits | None = None, decode_thread: bool = True) -> Service:
    lineup = load_lineup(corpus)
    if not lineup.variants:
        raise UsageError(f"no variant of {corpus.name!r} can be served; run: assistant build {corpus.root}")
    return Service(corpus, lineup, limits, decode_thread)


def check_serve_args(host: str, port: int, limits: Limits) -> list[str]:
    """One line per argument of `serve` that cannot work, found before the models load (minutes)."""
    out = []
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        out.append(f"--port must be a whole number from 1 to 65535, got {port!r}; e.g. --port 8000")
    if not host or any(c.isspace() for c in host):
        out.append(f"--host must be an address such as 127.0.0.1, got {host!r}")
    return out + [f"{p}" for p in limits.problems()]


def _check_port_free(host: str, port: int) -> None:
    """Bind the address once before loading the models, so a port in use (or a host that is not an
    address of this machine) is one line now, not a log line after minutes of loading."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
            s.bind(infos[0][4])
    except OSError as e:
        raise UsageError(f"cannot listen on {host}:{port} ({getattr(e, 'strerror', None) or e}); pick another "
                         "--port, or --host an address of this machine") from None


def serve(corpus: Corpus, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          limits: Limits | None = None) -> None:
    """Run the server until interrupted (blocking). Arguments are checked before any model loads."""
    import uvicorn

    problems = check_serve_args(host, port, limits or Limits())
    if problems:
        raise UsageError("\n".join(problems))
    _check_port_free(host, port)
    limit_malloc_arenas(2)  # before the model loads and the server's threads start (MemoryKeeper)
    api_key = api_key or os.environ.get(API_KEY_ENV) or None
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {host}: reachable from other machines"
              + ("" if api_key else f"; set --api-key or {API_KEY_ENV} to require a key"), file=sys.stderr)
    if not access_log.handlers:  # uvicorn's own access log is off (log_level warning): this one is ours
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        access_log.addHandler(handler)
        access_log.setLevel(logging.INFO)
    service = open_service(corpus, limits, decode_thread=False)
    for why in service.lineup.missing.values():
        print(f"not served: {why.replace('**', '').replace('`', '')}", file=sys.stderr)
    print(f"serving {', '.join(service.lineup.variants)} of {corpus.name!r} on http://{host}:{port}/v1"
          + (" (API key required)" if api_key else ""), flush=True)
    server = uvicorn.Server(uvicorn.Config(create_app(service, api_key), host=host, port=port, log_level="warning"))
    if service.scheduler is None:
        server.run()
        return
    _run_beside_decoding(server, service.scheduler)


def _run_beside_decoding(server, scheduler: Scheduler) -> None:
    """HTTP on a thread, the decoding loop on this one, the main thread that loaded the model (why:
    `Scheduler.run`). A signal stops the server as uvicorn.run would (requests in flight are
    answered first, then the signal is raised again); the loop ends once the server has."""
    import signal

    def http() -> None:
        try:
            server.run()
        finally:
            scheduler.close()

    handled = (signal.SIGINT, signal.SIGTERM)
    original = {sig: signal.signal(sig, server.handle_exit) for sig in handled}
    thread = threading.Thread(target=http, name="uvicorn", daemon=True)
    try:
        thread.start()
        scheduler.run()
        thread.join()
    finally:
        for sig, handler in original.items():
            signal.signal(sig, handler)
    if not server.started:
        raise UsageError(f"the server could not start on {server.config.host}:{server.config.port}")
    for sig in reversed(getattr(server, "_captured_signals", [])):
        signal.raise_signal(sig)


class ServerThread:
    """A uvicorn server on a background thread (tests, benchmarks): `with ServerThread(app) as url:`."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        import socket

        import uvicorn

        if not port:  # a free loopback port
            with socket.socket() as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
        self.url = f"http://{host}:{port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server at {self.url} did not start")
            time.sleep(0.02)
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
