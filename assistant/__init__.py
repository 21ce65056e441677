"""Prompt, RAG or fine-tune? Build every variant from one corpus and compare them head to head."""

__version__ = "0.1.0"
