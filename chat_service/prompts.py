"""Prompt building shared by every front door."""

from __future__ import annotations

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant. Answer briefly."


def direct_messages(
    message: str, system_prompt: str = DEFAULT_SYSTEM_PROMPT
) -> list[dict[str, str]]:
    """The chat messages for one direct question."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*messages, {"role": "user", "content": message}]


# -- the restaurant assistant ------------------------------------------------------------

TOOL_DOCS = {
    "menu_search": 'CALL menu_search {"diet": [...], "without": [allergens], "max_price": 10, '
    '"category": "pizza", "query": "text"}',
    "order_add": 'CALL order_add {"item": "<menu id or name>", "quantity": 1}',
    "order_remove": 'CALL order_remove {"item": "<menu id or name>", "quantity": 1}',
    "order_show": "CALL order_show {}",
    "order_place": "CALL order_place {}",
    "reservation_check": 'CALL reservation_check {"time": "19:00", "party": 4, "day": "friday"}',
    "reservation_book": 'CALL reservation_book {"time": "19:00", "party": 4, "day": "friday", '
    '"name": "..."}',
}
NO_TOPIC = "If the guest asks about something else, say politely that you help with {name} only."


def tool_docs(tools: tuple[str, ...]) -> str:
    """How to call ``tools``: one line each, in the format ``chat_service.tools`` parses."""
    if not tools:
        return ""
    lines = "\n".join(TOOL_DOCS[t] for t in tools)
    return f"To act, write one line per action:\n{lines}"


def answer_messages(
    system: str,
    context: str,
    history: list[dict[str, str]],
    message: str,
) -> list[dict[str, str]]:
    """Stage 2's prompt: the project's system prompt, only the context this class needs,
    the trimmed history, the new message."""
    system_text = f"{system}\n\n{context}".strip()
    return [
        {"role": "system", "content": system_text},
        *history,
        {"role": "user", "content": message},
    ]
