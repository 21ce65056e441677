"""Shared-prefix training: the tokens every row of a batch starts with are run once, not per row.

Every closed-book training prompt opens with the same system prompt (with the user turn's opening,
62 of ~102 tokens on corpora/ecostride), so a batch of 8 spends most of its compute running one identical prefix 8
times. Here the prefix runs once (batch of one), its keys and values are repeated over the batch,
and the rows' own tokens run on top of them, the way generation reuses a KV cache. The math is the
same: every row sees the same keys and values at the same positions, and backpropagation sums the
rows' gradients through the repeated prefix exactly as it would through eight copies. Only the
rounding of a batch-of-one GEMM can differ (bf16 noise; tests/test_training.py compares loss and
gradients). The prefix ends before the first labelled position, so no loss term is lost.

Applies to any batch whose rows share at least MIN_TOKENS leading tokens (prompt-completion
QA rows, RAFT prompts); anything else (document chunks, packed or padding-free batches, several
processes under DDP) takes TRL's usual path.
"""

from __future__ import annotations

import torch
from trl import SFTTrainer

from assistant.model.loading import cache_argument

MIN_TOKENS = 16  # below this the second forward costs more than it saves


def shared_prefix_length(inputs: dict, min_tokens: int = MIN_TOKENS) -> int:
    """Leading positions that are the same real token in every row and carry no label (0 if too few)."""
    ids, mask, labels = inputs["input_ids"], inputs.get("attention_mask"), inputs.get("labels")
    if ids.dim() != 2 or ids.size(0) < 2 or mask is None or labels is None or "position_ids" in inputs:
        return 0
    same = (ids == ids[:1]).all(0) & mask.bool().all(0)
    # The loss scores position t+1 from position t: the prefix must stop at or before the last
    # position whose *next* label is ignored, i.e. labels[:, :p + 1] all -100.
    unlabelled = (labels == -100).all(0)
    ok = same & torch.cat([unlabelled[1:], unlabelled.new_zeros(1)])
    p = int(ok.long().cumprod(0).sum())
    return p if p >= min_tokens and p < ids.size(1) else 0


def split_inputs(model, inputs: dict, p: int) -> dict:
    """Run the first `p` tokens once and return the batch's inputs for the rest, on that cache."""
    from transformers import DynamicCache

    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = lm.base_model  # the decoder without its LM head: the prefix is never scored
    cache = DynamicCache(config=lm.config)
    key = cache_argument(lm)
    backbone(input_ids=inputs["input_ids"][:1, :p], attention_mask=inputs["attention_mask"][:1, :p],
             use_cache=True, **{key: cache})
    cache.batch_repeat_interleave(inputs["input_ids"].size(0))
    rest = {k: v for k, v in inputs.items() if k not in ("input_ids", "labels", "use_cache")}
    rest["input_ids"] = inputs["input_ids"][:, p:]
    rest["labels"] = inputs["labels"][:, p:]
    rest[key] = cache
    rest["attention_mask"] = inputs["attention_mask"]  # prefix + rest: positions continue after the prefix
    return rest


class SharedPrefixSFTTrainer(SFTTrainer):
    """TRL's SFTTrainer with the batch's common prefix computed once (see the module docstring)."""

    shared_prefix = True
    prefix_tokens_saved = 0  # positions not run thanks to sharing (a counter for the log)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # Under DDP a second forward per step would upset the gradient reducer; return_outputs
        # re-runs the model on the same inputs, which the consumed cache cannot serve.
        use = self.shared_prefix and self.accelerator.num_processes == 1 and not return_outputs
        p = shared_prefix_length(inputs) if use else 0
        if p:
            self.prefix_tokens_saved += p * (inputs["input_ids"].size(0) - 1)
            # TRL still counts the batch's tokens from the attention mask, which spans the prefix.
            inputs = split_inputs(self.accelerator.unwrap_model(model), inputs, p)
        return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                    num_items_in_batch=num_items_in_batch)
