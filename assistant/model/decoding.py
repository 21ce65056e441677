"""The one decoding loop: continuous batching over a SlotCache, for evaluation, chat and the API.

A `Decoder` holds the rows being decoded. `admit` prefills newcomers (after the shared prefix, whose
keys and values are computed once per adapter: `PrefixCache`), those that share an adapter and a
prefix in one forward pass, and gives each its first token; `step` runs one forward pass over every
live row and gives each its next token. A row that
is done leaves at once and its slot takes the next newcomer, so a batch stays full while answers of
any length come and go (a static batch decodes its longest answer with every finished row aboard).

Why an answer stays the same bits alone and in any mix (invariance.py has the measurements):
- a row's prefill computes what it computes alone: its linear layers run among other prompts' tokens
  only where the plan found that changes no bit (`DecodePlan.together`), its attention covers its
  own tokens only, and its first token comes from an LM head of at least `plan.rows` rows, alone too;
- in a decoding step the linear layers see at least `plan.rows` rows (filler rows make up the
  count, per adapter group: PEFT runs each adapter on its own rows), from which a row's output no
  longer depends on how many others there are;
- attention runs per row over that row's own keys (invariance.batch_invariant_attention);
- sampled rows draw from their own generator (sampling.py).
"""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
from transformers import LogitsProcessorList, PreTrainedModel, PreTrainedTokenizerBase
from transformers.cache_utils import DynamicCache

from assistant.model.loading import cache_argument
from assistant.model.sampling import GREEDY, Sampling, next_token
from assistant.model.slots import KV, SlotCache

# Bump when a change to the loop can move an answer's bits: evaluation answers cached by an earlier
# loop are then decoded again (variants.base.Variant.fingerprint).
DECODING_VERSION = "2"
PREFILL_TOKENS = 512  # at most this many new prompt tokens (rows x longest) in one prefill forward pass

@dataclass(frozen=True)
class DecodePlan:
    """How the engine decodes a batch so that no answer depends on its neighbours (`Engine.plan`)."""

    rows: int  # fewest rows a decoding step runs (filler rows make up a short step)
    threads: int | None = None  # torch threads while decoding; None: the process's own
    alone: bool = False  # no safe row count: every question is decoded on its own
    together: bool = False  # newcomers' prompts prefilled in one forward pass (invariance.many_rows_invariant)

    def __str__(self) -> str:
        if self.alone:
            return "each question decoded alone (no batch-invariant row count)"
        threads = f", {self.threads} thread while decoding" if self.threads else ""
        together = ", prompts prefilled together" if self.together else ", each prompt prefilled alone"
        return f"batches of at least {self.rows} rows{threads}{together}"


@dataclass
class DecodeStats:
    """What the engine decoded since it was created: the evaluation reports it (work done, not assumed)."""

    answers: int = 0  # decoded
    reused: int = 0  # answered with an earlier identical prompt's Generation instead
    tokens: int = 0  # answer tokens kept
    row_steps: int = 0  # rows x decoding steps computed, filler rows included
    steps: int = 0  # decoding steps (forward passes over the live rows)
    alone: int = 0  # decoded one question at a time: no batch-invariant row count here (`Engine.plan`)


class Host(Protocol):
    """What the loop asks of the engine that owns it (`engine.Engine`): its model, its adapters and
    the numerics the plan was probed with."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    adapters: dict
    stats: DecodeStats
    _lock: contextlib.AbstractContextManager

    @property
    def device(self) -> torch.device: ...

    def decoding_threads(self, plan: DecodePlan) -> contextlib.AbstractContextManager: ...

    def prefix_kv(self, prefix: list[int], adapter: str | None) -> KV: ...

    def adapter_kwargs(self, adapters: list[str | None]) -> dict: ...

    def _processors(self) -> LogitsProcessorList: ...

    def _stop_ids(self) -> set[int]: ...



@dataclass(eq=False)
class Row:
    """One request in the loop: its prompt's token ids and, as it decodes, its answer's."""

    ids: list[int]
    adapter: str | None = None
    max_new: int = 64
    sampling: Sampling = GREEDY
    prefix: int = 0  # leading tokens taken from the shared-prefix cache (0: none)
    stopped: Callable[[], bool] | None = None  # polled at every step: True ends the row ("cancelled")
    tokens: list[int] = field(default_factory=list)  # the answer so far, end-of-sequence excluded
    reason: str | None = None  # once done: stop (end-of-sequence) | length | cancelled
    started: float = 0.0  # when it was admitted (perf_counter)
    finished: float = 0.0
    steps: int = 0  # decoding steps it took part in
    rows_seen: int = 0  # live rows of those steps, summed: rows_seen / steps is its average batch
    generator: torch.Generator | None = None
    slot: int = -1

    @property
    def done(self) -> bool:
        return self.reason is not None

    @property
    def batch_size(self) -> int:
        return max(1, round(self.rows_seen / self.steps)) if self.steps else 1


class PrefixCache:
    """Keys and values of shared prompt prefixes (chat template and system prompt), per adapter.

    A prefix's keys and values depend on its tokens and the weights only, so every row that starts
    with it reuses one computation (a copy of a few tokens instead of a forward pass over them)."""

    def __init__(self, size: int = 16):
        self.size = size
        self._kv: OrderedDict[tuple, KV] = OrderedDict()

    def get(self, key: tuple, compute: Callable[[], KV]) -> KV:
        if key in self._kv:
            self._kv.move_to_end(key)
        else:
            self._kv[key] = compute()
            while len(self._kv) > self.size:
                self._kv.popitem(last=False)
        return self._kv[key]

    def clear(self) -> None:
        self._kv.clear()


class Decoder:
    """A continuous batch of at most `slots` rows on one engine (see the module docstring)."""

    def __init__(self, engine: Host, plan: DecodePlan, slots: int, budget: int | None = None):
        self.engine = engine
        self.plan = plan
        self.slots = 1 if plan.alone else max(1, slots)
        self.budget = budget  # at most this many prompt tokens x rows live at once (memory)
        self.live: list[Row] = []
        self.cache = SlotCache(engine.model.config, max_slots=self.slots + plan.rows)
        self.stop_ids = engine._stop_ids()
        self.processors = engine._processors()

    # -- joining --------------------------------------------------------------------------------
    def has_room(self, row: Row | None = None, joining: Sequence[Row] = ()) -> bool:
        """Whether `row` may join now, beside the live rows and those `joining` with it."""
        if len(self.live) + len(joining) >= self.slots:
            return False
        if self.budget is None or row is None or not (self.live or joining):
            return True
        widest = max([len(r.ids) for r in (*self.live, *joining)] + [len(row.ids)])
        return (len(self.live) + len(joining) + 1) * widest <= self.budget

    def admit(self, rows: Row | Sequence[Row]) -> None:
        """Prefill newcomers and give each its first token; those not done at once join the batch.

        Rows that share an adapter and a shared prefix are prefilled together where the plan allows
        (`DecodePlan.together`), in forward passes of at most PREFILL_TOKENS prompt tokens."""
        rows = [rows] if isinstance(rows, Row) else list(rows)
        groups: dict[tuple, list[Row]] = {}
        for row in rows:
            row.started = time.perf_counter()
            row.generator = row.sampling.generator()
            if row.stopped is not None and row.stopped():
                self._finish(row, "cancelled")
                continue
            # Fewer new tokens than plan.rows: alone, their linear layers run other kernels than in company.
            together = self.plan.together and len(row.ids) - row.prefix >= self.plan.rows
            key = (row.adapter, tuple(row.ids[:row.prefix])) if together else (id(row),)
            groups.setdefault(key, []).append(row)
        for group in groups.values():
            group.sort(key=lambda r: len(r.ids), reverse=True)  # little padding within a pass
            while group:
                width = len(group[0].ids) - group[0].prefix
                n = max(1, min(len(group), PREFILL_TOKENS // max(1, width)))
                batch, group = group[:n], group[n:]
                with self._forward_context():
                    prefilled = self._prefill(batch)
                for row, (logits, kv) in zip(batch, prefilled):
                    self._take(row, logits)
                    if not row.done:
                        row.slot = self.cache.insert(kv)
                        self.live.append(row)

    def _prefill(self, rows: list[Row]) -> list[tuple[torch.Tensor, KV]]:
        """Each row's last-position logits and every layer's keys and values for its prompt, from one
        forward pass (rows of one adapter and one shared prefix; the rest of each prompt right-padded)."""
        engine = self.engine
        n, prefix, device = len(rows), rows[0].prefix, engine.device
        lengths = [len(r.ids) - prefix for r in rows]
        width = max(lengths)
        cache = DynamicCache(config=engine.model.config)
        if prefix:
            for layer, (k, v) in zip(cache.layers, engine.prefix_kv(rows[0].ids[:prefix], rows[0].adapter)):
                layer.lazy_initialization(k, v)
                # update() concatenates: the shared tensors stay intact
                layer.keys, layer.values = k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1)
        pad = engine.tokenizer.pad_token_id
        ids = torch.tensor([r.ids[prefix:] + [pad] * (width - m) for r, m in zip(rows, lengths)], device=device)
        positions = torch.arange(prefix, prefix + width, device=device)[None].expand(n, -1)
        padded = {}
        if min(lengths) < width:  # the attention reads each row's real keys off this mask
            padded["attention_mask"] = torch.tensor([[1] * (prefix + m) + [0] * (width - m) for m in lengths],
                                                    device=device)
        # Each row's last real position goes through the LM head in a pass of at least plan.rows rows
        # (copies of the last make up the count), alone as in company: the same kernel either way.
        last = [m - 1 for m in lengths] + [lengths[-1] - 1] * max(0, self.plan.rows - n)
        rows_of = list(range(n)) + [n - 1] * max(0, self.plan.rows - n)
        with _last_positions(engine.model, rows_of, last):
            out = engine.model(input_ids=ids, position_ids=positions, use_cache=True, logits_to_keep=0,
                               **padded, **{cache_argument(engine.model): cache},
                               **engine.adapter_kwargs([rows[0].adapter] * n))
        return [(out.logits[b, -1], [(layer.keys[b:b + 1, :, :prefix + m], layer.values[b:b + 1, :, :prefix + m])
                                     for layer in cache.layers])
                for b, m in enumerate(lengths)]

    # -- decoding -------------------------------------------------------------------------------
    def step(self) -> None:
        """One forward pass over every live row (and its fillers); finished rows leave."""
        for row in [r for r in self.live if r.stopped is not None and r.stopped()]:
            self.drop(row, "cancelled")
        if not self.live:
            return
        adapters = [r.adapter for r in self.live] + self._fillers()
        rows = len(adapters)
        with self._forward_context():
            mask = self.cache.begin_step(rows)
            last = [r.tokens[-1] for r in self.live] + [self.engine.tokenizer.pad_token_id] * (rows - len(self.live))
            positions = [len(r.ids) + len(r.tokens) - 1 for r in self.live] + [0] * (rows - len(self.live))
            device = self.engine.device
            out = self.engine.model(
                input_ids=torch.tensor(last, device=device)[:, None],
                position_ids=torch.tensor(positions, device=device)[:, None], attention_mask=mask,
                use_cache=True, logits_to_keep=1, **{cache_argument(self.engine.model): self.cache},
                **self.engine.adapter_kwargs(adapters))
            self.cache.end_step()
        self.engine.stats.row_steps += rows
        self.engine.stats.steps += 1
        logits = out.logits[:len(self.live), -1]
        greedy = logits.argmax(-1).tolist() if not self.processors else None
        for b, row in enumerate(list(self.live)):
            row.steps += 1
            row.rows_seen += len(self.live)
            self._take(row, logits[b], greedy[b] if greedy is not None and row.sampling.greedy else None)
        for row in [r for r in self.live if r.done]:
            self._leave(row)

    def _fillers(self) -> list[str | None]:
        """Adapters of the filler rows: every adapter group of the step gets at least plan.rows rows."""
        if self.plan.rows <= 1:
            return []
        if not self.engine.adapters:
            return [None] * max(0, self.plan.rows - len(self.live))
        counts: dict[str | None, int] = {}
        for r in self.live:
            counts[r.adapter] = counts.get(r.adapter, 0) + 1
        return [a for a, n in counts.items() for _ in range(max(0, self.plan.rows - n))]

    def _take(self, row: Row, logits: torch.Tensor, token: int | None = None) -> None:
        """Choose the row's next token from its logits and note whether that ends it."""
        if token is None:
            if self.processors:
                context = torch.tensor([row.ids + row.tokens], device=logits.device)
                logits = self.processors(context, logits[None])[0]
            token = next_token(logits, row.sampling, row.generator)
        if token in self.stop_ids:
            self._finish(row, "stop")
            return
        row.tokens.append(token)
        if len(row.tokens) >= row.max_new:
            self._finish(row, "length")

    # -- leaving --------------------------------------------------------------------------------
    def drop(self, row: Row, reason: str = "cancelled") -> None:
        """End a live row now (a stop string, a client that left): its slot is free at the next step."""
        if not row.done:
            self._finish(row, reason)
        if row in self.live:
            self._leave(row)

    def _leave(self, row: Row) -> None:
        # live[i] decodes in slot i: the last row moves into the freed slot, as in the cache.
        slot = row.slot
        moved = self.cache.remove(slot)
        last = self.live.pop()
        if moved is not None:
            last.slot = slot
            self.live[slot] = last
        row.slot = -1

    def _finish(self, row: Row, reason: str) -> None:
        row.reason = reason
        row.finished = time.perf_counter()
        self.engine.stats.answers += 1
        self.engine.stats.tokens += len(row.tokens)

    @contextlib.contextmanager
    def _forward_context(self) -> Iterator[None]:
        """The engine's lock, the plan's thread count and inference mode, for one forward pass: a
        long-running loop (the API's) lets other callers of the engine in between its steps."""
        with self.engine._lock, self.engine.decoding_threads(self.plan), torch.inference_mode():
            yield


@contextlib.contextmanager
def _last_positions(model: PreTrainedModel, rows: list[int], positions: list[int]) -> Iterator[None]:
    """Within: the model's LM head computes only the hidden states at (rows[i], positions[i]), one
    output row each, whatever the forward pass asked of it (the model's own head, so anything the
    model does to its logits after it still happens)."""
    def gather(module, args):
        hidden = args[0]
        picked = hidden[torch.tensor(rows, device=hidden.device), torch.tensor(positions, device=hidden.device)]
        return (picked[:, None, :].contiguous(), *args[1:])

    handle = model.get_output_embeddings().register_forward_pre_hook(gather)
    try:
        yield
    finally:
        handle.remove()

