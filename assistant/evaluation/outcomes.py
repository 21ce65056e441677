"""The words of an evaluation row, defined once: the slice a question falls in, the groups of slices
the verdict reads, and the outcome an answer gets.

A row's `slice` is one of SLICES; its `outcome` one of OUTCOMES, or GATE when the retrieval gate
declined before generating (a fact of the pipeline, never judged).
"""

from __future__ import annotations

SLICES = ("seen", "paraphrase", "unseen", "unanswerable", "general", "safety")
ANSWERABLE = ("paraphrase", "unseen")  # the domain questions accuracy is measured on
DOMAIN = ("paraphrase", "unseen", "unanswerable")
OWN = ("general", "safety")  # answered by the model itself, never by the retrieval gate
GROUNDED = ("seen", "paraphrase", "unseen", "unanswerable")  # claims should be backed by the corpus

UNVERIFIED = "unverified"  # the scorer cannot tell: never counted as correct (DESIGN.md, "Measuring")
JUDGED = ("correct", "abstained", "hallucinated")  # what a person, the judge or a proving rule can say
OUTCOMES = JUDGED + (UNVERIFIED,)
GATE = "declined_by_gate"  # the retrieval gate's canned decline
