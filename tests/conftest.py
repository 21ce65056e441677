"""Shared fixtures: the tiny fixture corpus (tiny random model, real tokenizer), offline always."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).parent.parent


@pytest.fixture
def tiny_corpus_dir(tmp_path: Path) -> Path:
    """A writable copy of tests/fixtures/tiny whose artifacts go under tmp_path."""
    dst = tmp_path / "tiny"
    shutil.copytree(FIXTURES / "tiny", dst)
    with open(dst / "corpus.yaml", "a") as f:
        f.write(f"runs_dir: {tmp_path / 'runs'}\n")
    return dst


@pytest.fixture
def tiny_corpus(tiny_corpus_dir: Path):
    from assistant.corpus.corpus import load_corpus

    return load_corpus(tiny_corpus_dir)
