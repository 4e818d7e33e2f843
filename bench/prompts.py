"""The prompts of the first-token samples (``bench.engines``): one per sample, each cold.

A prompt the engine has seen before is not computed again: llama.cpp reuses the longest
prefix its context already holds, vLLM its cached blocks. So that every sample pays its
whole prefill, on both sides of the comparison alike, each sample's message begins with
a word of its own (``NONCES``: each one token of SmolLM2's tokenizer, no two the same
token), and the in-process engine and the miner get the very same list: what follows
the fixed chat template and system prompt ``/chat/direct`` sends differs from every
other sample's at its first token.
"""

from __future__ import annotations

import hashlib
import json

PROMPT = "Tell me a long story about a small restaurant by the sea."
# Uncounted samples first, on each side: the first use of each of the 8 llama.cpp contexts
# (``bench.engines.SLOTS``) allocates its buffers.
WARMUP = 10

NONCES = tuple(
    """
    Apple Engine Forest Ocean River Silver Under Window Yellow Zero Iron Summer Winter Spring
    Market Honey Salt Sugar Stone Paper Wood Cloud Light Button Thread Green Blue Black White
    Brown Golden Sunday Monday Friday North South East West Doctor Teacher Captain Queen King
    Prince Letter Number Story Music Family Travel Signal Table House Water Fire Earth Power
    Energy Money Time Year Day Night City Country World Child Mother Father Student School
    College Science History Nature Health Body Heart Mind Life Love Hope Peace War Game Ball
    Team Player Business Price Value Product Service System Program Computer Network Data
    Information Language Word Book Page Question Answer Problem Solution Reason Result Effect
    Change Growth Process Method Model Research Study Test Exam Class Course Lesson Rule Law
    Government State Group Member People Person Man Animal Plant Tree Fruit Food Red Dark Fast
    Slow Big Small Long Short High Low Hot Cold New Old Young Early Late First Last Next Open
    Close Start End
    """.split()
)


def sample_prompt(index: int) -> str:
    """The message of sample ``index`` (counted from the first warm-up sample)."""
    return f"{NONCES[index]}: {PROMPT}"


def warmup_prompts() -> list[str]:
    """The warm-up samples' messages, the same on both sides; never measured."""
    return [sample_prompt(i) for i in range(WARMUP)]


def measured_prompts(samples: int, rounds: int) -> list[list[str]]:
    """The measured samples' messages, cut into ``rounds`` interleaved rounds; no two
    alike, none a warm-up's."""
    if WARMUP + samples > len(NONCES):
        raise ValueError(f"at most {len(NONCES) - WARMUP} cold samples per side")
    every = [sample_prompt(WARMUP + i) for i in range(samples)]
    size = -(-samples // max(rounds, 1))
    return [every[i : i + size] for i in range(0, samples, size)]


def digest(prompts: list[str]) -> str:
    """A short fingerprint of a list of messages: the two sides check theirs agree."""
    return hashlib.sha256(json.dumps(prompts).encode()).hexdigest()[:16]
