"""Shared fixtures: the tiny fixture corpus (tiny random model, real tokenizer), offline always."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="session", autouse=True)
def tiny_model_dir() -> Path:
    """The tests' model folder (tests/tiny_model.py), built before the first test on a fresh machine."""
    from tiny_model import build_tiny_model

    return build_tiny_model()


@pytest.fixture
def tiny_corpus_dir(tmp_path: Path) -> Path:
    """A writable copy of tests/fixtures/tiny whose artifacts go under tmp_path."""
    from tiny_model import copy_tiny_corpus

    return copy_tiny_corpus(tmp_path / "tiny", runs_dir=tmp_path / "runs")


@pytest.fixture
def tiny_corpus(tiny_corpus_dir: Path):
    from assistant.corpus.corpus import load_corpus

    return load_corpus(tiny_corpus_dir)
