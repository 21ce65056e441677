"""The process's environment: offline switches and library verbosity, set once by each entry point."""

from __future__ import annotations

import os
import warnings


def quiet_libraries() -> None:
    """Offline by design (nothing is fetched from a hub at run time) and no library chatter."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    # TRL and PEFT still read the old attribute name; the notice is for them, not for our users.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*is deprecated", category=FutureWarning)
