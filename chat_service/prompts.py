"""Prompt building shared by every front door."""

from __future__ import annotations

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant. Answer briefly."


def direct_messages(
    message: str, system_prompt: str = DEFAULT_SYSTEM_PROMPT
) -> list[dict[str, str]]:
    """The chat messages for one direct question."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*messages, {"role": "user", "content": message}]
