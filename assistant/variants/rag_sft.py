"""`rag_sft`: RAFT-style hybrid, a LoRA adapter trained on prompts holding retrieved passages
(gold + distractors, see training.raft_examples), served with the same retrieval and prompt as `rag`."""

from __future__ import annotations

from assistant.variants.finetuned import FineTuned
from assistant.variants.rag import RagVariant


class RagSftVariant(FineTuned, RagVariant):
    name = "rag_sft"
    adapter = "rag_sft"
