"""A model behind an OpenAI-compatible chat server (Ollama, vLLM, llama.cpp, a hosted API): the one
place that opens a client to it, for the question generator and the LLM judge alike."""

from __future__ import annotations

import os


def openai_client(base_url: str, api_key_env: str | None, timeout_s: float, max_retries: int):
    """The official `openai` client for `base_url`, its key read from `$api_key_env` (local servers
    take any key, so none set sends a placeholder). The client itself retries connection errors,
    timeouts, 408/409/429 and 5xx `max_retries` times with exponential backoff."""
    import openai  # only a judge or a remote generator needs it

    key = os.environ.get(api_key_env, "") if api_key_env else ""
    return openai.OpenAI(base_url=base_url, api_key=key or "not-needed", timeout=timeout_s, max_retries=max_retries)
