"""Counting tokens with the serving model's own tokenizer (not characters).

The tokenizer of SmolLM2-135M-Instruct (the model miners serve here) ships with the
project, compressed, in ``data/tokenizers/``; it is the ``tokenizer.json`` of that
model, loaded with Hugging Face's ``tokenizers`` (Rust, no torch). A project may
name another tokenizer file for the model its miners serve.
"""

from __future__ import annotations

import gzip
from functools import lru_cache
from pathlib import Path

from tokenizers import Tokenizer

DATA = Path(__file__).resolve().parent / "data"
DEFAULT_TOKENIZER = DATA / "tokenizers" / "smollm2-135m-instruct.json.gz"
# Tokens a chat template adds around each message (role markers, separators).
PER_MESSAGE_OVERHEAD = 4


class TokenCounter:
    def __init__(self, path: Path = DEFAULT_TOKENIZER) -> None:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
        self._tokenizer = Tokenizer.from_str(raw.decode())

    def count(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def message(self, role: str, content: str) -> int:
        """Tokens one chat message takes in a prompt."""
        return self.count(role) + self.count(content) + PER_MESSAGE_OVERHEAD


@lru_cache(maxsize=8)
def counter(path: str = "") -> TokenCounter:
    """A shared counter per tokenizer file (loading one takes ~50 ms)."""
    return TokenCounter(Path(path) if path else DEFAULT_TOKENIZER)
