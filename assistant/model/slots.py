"""The KV cache of a continuous batch: one slot per row in a buffer preallocated per layer.

Rows join and leave the batch at any step, so they hold different lengths. Every row's keys sit
left-aligned in its slot: a row that joins with L tokens is copied into columns [0, L) of a free
slot, and each decoding step writes each row's next column (`lengths[i]`). A step's attention
reads the rows in runs of consecutive slots (`groups`), each run up to its longest row's tokens
rounded up to WIDTH_BLOCK, the step's mask hiding each row's
columns past its own. A row therefore sits at the same columns, and its keys are read at a width
that depends on its neighbours only in whole blocks, alone and beside any others: the attention
(invariance.decoding_attention) covers a run in one call where this CPU's kernel gives a row the
same bits at any such width and batch (invariance.batched_decoding), else each row apart. The
buffer grows only when the longest row outgrows it, so a long-running batch (the API) reuses one.
"""

from __future__ import annotations

import weakref

import torch
from transformers import PretrainedConfig
from transformers.cache_utils import DynamicCache, DynamicLayer

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values of shape [1, heads, tokens, dim]

# A step's attention reads whole blocks of columns: a row's padding then depends on its neighbours
# in whole blocks only, which the invariance probe covers (a row alone reads its own length rounded
# up; in a run, the run's longest). Measured on an Intel AMX Xeon (2 threads): a row read at its
# exact length alone got other bits than in a masked batch for 177 of 415 random rows in bf16 and
# 395 of 415 in fp32; rounded up to 64 columns, for none.
WIDTH_BLOCK = 64


def width(tokens: int) -> int:
    """The columns a step attends to when its longest row holds `tokens` keys (its new one included)."""
    return -(-tokens // WIDTH_BLOCK) * WIDTH_BLOCK


class SlotCache(DynamicCache):
    """Slots 0..n-1 hold the live rows (`lengths[i]` is row i's tokens); the slots after them are
    free, and a decoding step may run filler rows there (they attend only the column they write)."""

    def __init__(self, config: PretrainedConfig, max_slots: int | None = None):
        super().__init__(config=config)
        self.max_slots = max_slots  # slots grow as rows join, up to this (the decoder's most rows)
        # The layers see the cache through a weak reference: a cycle would keep a finished batch's
        # buffers (most of the engine's memory) alive until Python's cycle collector happened to run
        # (measured: 1.4 GB held after the evaluation's 48 RAG prompts).
        self.layers = [_SlotLayer(weakref.proxy(self), i) for i in range(len(self.layers))]
        self.keys: list[torch.Tensor] = []  # per layer: [slots, heads, capacity, dim]
        self.values: list[torch.Tensor] = []
        self.lengths: list[int] = []  # tokens held by the row in each occupied slot
        self.rows = 0  # slots the current forward pass covers (live rows, then fillers)
        self.width = 0  # columns the current forward pass attends to
        self.finite = 0  # columns [0, finite) of every slot hold finite numbers (rows' keys, else zeros)
        self._widths: list[int] = []  # the step's rows' own widths (begin_step)
        self._runs: list[tuple[int, int, int]] | None = None  # groups, once asked for
        self._columns: torch.Tensor | None = None  # the step's write column of each row (begin_step)
        self._index: dict[int, torch.Tensor] = {}  # per head count: the rows' new entries in a flat buffer
        self._expected = (0, 0, None)  # slots and columns the decoder expects to need soon, its most slots (expect())

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2] if self.keys else 0

    @property
    def slots(self) -> int:
        return self.keys[0].shape[0] if self.keys else 0

    @property
    def groups(self) -> list[tuple[int, int, int]]:
        """The step's runs of consecutive slots for its attention, (first, end, columns), computed
        when first asked for (a plan with a call per row never does)."""
        if self._runs is None:
            self._runs = _groups(self._widths)
        return self._runs

    @property
    def longest(self) -> int:
        """The most tokens a live row holds (0 with none)."""
        return max(self.lengths, default=0)

    def expect(self, slots: int, columns: int, most: int | None = None) -> None:
        """The decoder's estimate of the slots and columns its rows will need (those live and those
        joining, their prompts and answers): the next growth goes straight there instead of growing
        step by step, each growth a copy of the whole buffer. `most`: the slots its token budget
        allows at these rows' width, where growing by a quarter stops."""
        self._expected = (slots, columns, most)

    @torch.inference_mode()
    def insert(self, *pieces: KV) -> int:
        """Copy a prefilled row (its prompt's chunks, one after another) into the next free slot,
        from its first column; its slot. (The decoder inserts each wave of newcomers longest first,
        so that a step's runs of similar rows, `groups`, are few; moving rows to keep a strict order
        cost more than it saved: an evaluation's rows leave at almost every step.)"""
        tokens = sum(kv[0][0].shape[2] for kv in pieces)
        slot = len(self.lengths)
        columns = width(tokens + 1)  # its next step's too
        self._reserve(slot + 1, columns, pieces[0])
        self._clean(columns)
        at = 0
        for kv in pieces:  # chunk by chunk: no joined copy of the prompt's keys first
            m = kv[0][0].shape[2]
            for (k, v), keys, values in zip(kv, self.keys, self.values):
                keys[slot, :, at:at + m] = k[0]
                values[slot, :, at:at + m] = v[0]
            at += m
        self.lengths.append(tokens)
        return slot

    def release(self) -> None:
        """Drop the buffers and every row with them (a finished batch: its memory is free at once)."""
        self.keys, self.values, self.lengths, self.finite = [], [], [], 0

    @torch.inference_mode()
    def remove(self, slot: int) -> int | None:
        """Free `slot`; the last live row moves into it. Returns the slot that moved there, if any."""
        last = len(self.lengths) - 1
        if slot != last:
            n = self.lengths[last]
            for buf in (*self.keys, *self.values):
                buf[slot, :, :n] = buf[last, :, :n]
            self.lengths[slot] = n
        self.lengths.pop()
        return last if slot != last else None

    @torch.inference_mode()
    def begin_step(self, rows: int) -> torch.Tensor:
        """Make room for one more column in `rows` slots; the step's attention mask [rows, width],
        True where a row attends (its tokens and the one it writes now; a filler writes and attends
        column 0), for the model's mask functions to build its attention's own form of."""
        columns = self.lengths + [0] * (rows - len(self.lengths))
        self._widths, self._runs = [width(n + 1) for n in columns], None
        self.width = max(self._widths)
        self._reserve(rows, self.width)
        self._clean(self.width)
        self.rows = rows
        device = self.keys[0].device
        self._columns = torch.tensor(columns, device=device)
        self._index = {}
        return torch.arange(self.width, device=device)[None, :] <= self._columns[:, None]

    def end_step(self) -> None:
        self.lengths = [n + 1 for n in self.lengths]
        self._columns, self._index = None, {}

    def _entries(self, heads: int) -> torch.Tensor:
        """Where each row's new key goes in a layer's buffer viewed as [slots * heads * capacity, dim],
        row by row and head by head: one index_copy_ a layer (16 rows, bf16, 2 threads, in isolation:
        2.8 us against 4.4 us for the same write as an indexed assignment)."""
        if heads not in self._index:
            c = self._columns
            slot_heads = torch.arange(self.rows, device=c.device)[:, None] * heads + torch.arange(heads, device=c.device)
            self._index[heads] = (slot_heads * self.capacity + c[:, None]).flatten()
        return self._index[heads]

    def _clean(self, columns: int) -> None:
        """Zero the columns up to `columns` that no row wrote yet, in every slot: a step's attention
        reads (and masks) a row's columns up to its run's width, where garbage (NaN) would poison
        the sums. Only as far as steps reach, not the whole buffer: the buffer is sized for whole
        answers (profiled: ~40 ms of fills in a 16-request burst's 0.5 s admission, the whole
        buffer's zeroing among them)."""
        if columns > self.finite:
            for buf in (*self.keys, *self.values):
                buf[:, :, self.finite:columns] = 0
            self.finite = columns

    def _reserve(self, slots: int, columns: int, like: KV | None = None) -> None:
        """Grow the buffers to at least `slots` x `columns`, keeping their contents."""
        if self.keys and slots <= self.slots and columns <= self.capacity:
            return
        if not self.keys:
            shapes = [(k.shape[1], k.shape[3], v.shape[3], k.dtype, k.device) for k, v in like]
        else:
            shapes = [(k.shape[1], k.shape[3], v.shape[3], k.dtype, k.device) for k, v in zip(self.keys, self.values)]
        # Grown to what the decoder expects, else by a quarter (few copies), and no further: the
        # buffer is most of the engine's memory (the default model: 46 kB per slot and column in fp32).
        want_slots, want_columns, most = self._expected
        ceiling = min([n for n in (self.max_slots, most) if n] or [slots])
        new_slots = self.slots if slots <= self.slots else \
            max(slots, min(max(want_slots, self.slots * 5 // 4), ceiling))
        new_columns = self.capacity if columns <= self.capacity else \
            width(max(columns, want_columns, self.capacity * 5 // 4))
        # Layer by layer, each old buffer dropped once copied: the old and the new cache never coexist
        # whole (measured: growing to 1 GB for 45 RAG rows raised the evaluation's peak by 0.7 GB).
        # Left uninitialised past `finite` (_clean zeroes what steps reach); new slots are zeroed
        # up to it.
        old_slots = self.slots
        if not self.keys:
            self.keys, self.values = [None] * len(shapes), [None] * len(shapes)
        for i, (heads, k_dim, v_dim, dtype, device) in enumerate(shapes):
            for buffers, dim in ((self.keys, k_dim), (self.values, v_dim)):
                grown = torch.empty(new_slots, heads, new_columns, dim, dtype=dtype, device=device)
                if buffers[i] is not None:
                    grown[:old_slots, :, :self.finite] = buffers[i][:, :, :self.finite]
                grown[old_slots:, :, :self.finite] = 0
                buffers[i] = grown


# A call of the step's attention costs about as much as reading this many row-columns of keys and
# values (measured on an Intel AMX Xeon, bf16, 2 threads: ~35 us a call, ~0.07 us a row-column).
CALL_COLUMNS = 512


def _groups(widths: list[int]) -> list[tuple[int, int, int]]:
    """Runs of consecutive slots, each attended in one call at the widest of its widths: the split
    that reads the fewest padded columns, counting CALL_COLUMNS for each call (the best split of n
    rows into runs, by dynamic programming; n is at most a few dozen)."""
    n = len(widths)
    best, cut = [0] + [None] * n, [0] * (n + 1)
    for end in range(1, n + 1):
        widest = 0
        for first in range(end - 1, -1, -1):
            widest = max(widest, widths[first])
            cost = best[first] + (end - first) * widest + CALL_COLUMNS
            if best[end] is None or cost < best[end]:
                best[end], cut[end] = cost, first
    runs, end = [], n
    while end:
        first = cut[end]
        runs.append((first, end, max(widths[first:end])))
        end = first
    return runs[::-1]


class _SlotLayer(DynamicLayer):
    """One layer's view of the SlotCache for the model's forward pass: a decoding step writes each
    row's new key and value at that row's next column and attends to the step's first `width`."""

    def __init__(self, cache: SlotCache, index: int):
        super().__init__()
        self.cache, self.index = cache, index
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        c, rows = self.cache, key_states.shape[0]
        if key_states.shape[2] != 1 or rows != c.rows:
            raise ValueError("a SlotCache takes one new token per row of the step (prefill runs apart)")
        keys, values = c.keys[self.index], c.values[self.index]
        index = c._entries(keys.shape[1])
        keys.view(-1, keys.shape[-1]).index_copy_(0, index, key_states.reshape(-1, key_states.shape[-1]))
        values.view(-1, values.shape[-1]).index_copy_(0, index, value_states.reshape(-1, value_states.shape[-1]))
        return keys[:rows, :, :c.width], values[:rows, :, :c.width]

    def get_seq_length(self) -> int:
        return self.cache.longest

    def get_mask_sizes(self, query_length: int, *args) -> tuple[int, int]:
        return self.cache.width, 0
