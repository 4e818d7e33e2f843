"""The intent classifier's training corpus: hand-written messages and templates in
``chat_service/data/intents/<lang>.txt``, expanded with a fixed seed.

A corpus file is lines of four kinds::

    # a comment
    $dish = margherita | carbonara | lasagna   (a slot and its values)
    @menu ingredients                          (label `menu`, section `ingredients`)
    what's in the {dish}?                      (a message; {slot} makes it a template)

A corpus may be split over files (``en.txt``, ``en_natural.txt``). A template gives
`VARIANTS` messages with slot values drawn at random; a plain line
gives itself. A share of the messages also comes back with a typo (`TYPO_SHARE`). A
message belongs to its group (the line it came from: a phrasing, its variants and their
typos), and whole groups are held out (`split` "test"), so no test message is a training
one with other slot values or a slip of the keyboard. Messages of the evaluation set
(``chat_service.evaluation``) are left out, so that it stays a fair test.
"""

from __future__ import annotations

import random
import re
import zlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from chat_service.classifier import INTENT_FEATURIZER, LABELS
from chat_service.evaluation import load_eval
from chat_service.language import LANGUAGES

DATA_DIR = Path(__file__).resolve().parent.parent / "chat_service" / "data" / "intents"
SEED = 26
VARIANTS = 4
TYPO_SHARE = 0.3
TEST_SHARE = 5  # one group in five is held out (by a hash of its name)
SLOT = re.compile(r"\{(\w+)\}")
KEYBOARD = "qwertyuiop asdfghjkl zxcvbnm"
normalise = INTENT_FEATURIZER.normalise


@dataclass(frozen=True)
class Example:
    """One labelled training message."""

    text: str
    label: str
    lang: str
    group: str  # "<lang>/<label>/<section>/<line>": one phrasing and its variants
    split: str = "train"


def load_corpus(directory: Path = DATA_DIR, seed: int = SEED) -> list[Example]:
    """Every language's messages, expanded, with typos added and whole groups held out."""
    rng = random.Random(seed)
    examples: list[Example] = []
    for lang in LANGUAGES:
        for path in sorted(directory.glob(f"{lang}*.txt")):
            examples += expand(parse_file(path.read_text(encoding="utf-8"), lang, path.stem), rng)
    examples += [replace(e, text=typo(e.text, rng)) for e in examples if rng.random() < TYPO_SHARE]
    held_out = test_groups(e.group for e in examples)
    evaluation = {normalise(row.text) for row in load_eval()}
    unique = {(e.text.casefold(), e.label): e for e in examples}  # first wins on duplicates
    return [
        replace(e, split="test" if e.group in held_out else "train")
        for e in unique.values()
        if normalise(e.text) not in evaluation
    ]


@dataclass(frozen=True)
class Parsed:
    """A corpus file: its slots and (label, group, line) rows; a group is a line's
    section and number, so that a template and its variants stay together."""

    slots: dict[str, list[str]]
    rows: list[tuple[str, str, str]]
    lang: str


def parse_file(text: str, lang: str, name: str = "") -> Parsed:
    """A corpus file's slots and rows; an unknown label raises ValueError."""
    slots: dict[str, list[str]] = {}
    rows: list[tuple[str, str, str]] = []
    label = section = ""
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("$"):
            slot, _, values = line[1:].partition("=")
            slots[slot.strip()] = [v.strip() for v in values.split("|") if v.strip()]
        elif line.startswith("@"):
            label, _, section = line[1:].strip().partition(" ")
            if label not in LABELS or not section.strip():
                raise ValueError(f"{lang} line {number}: bad header {line!r}")
            section = section.strip()
        elif not label:
            raise ValueError(f"{lang} line {number}: a message before any @label header")
        else:
            rows.append((label, f"{section}/{name or lang}:{number}", line))
    return Parsed(slots, rows, lang)


def expand(parsed: Parsed, rng: random.Random) -> list[Example]:
    """Plain lines as they are; each template `VARIANTS` times with drawn slot values."""
    out = []
    for label, group, line in parsed.rows:
        key = f"{parsed.lang}/{label}/{group}"
        texts = [line]
        if SLOT.search(line):
            texts = sorted({fill(line, parsed.slots, rng) for _ in range(VARIANTS)})
        out += [Example(text, label, parsed.lang, key) for text in texts]
    return out


def fill(template: str, slots: dict[str, list[str]], rng: random.Random) -> str:
    def pick(match: re.Match[str]) -> str:
        if match.group(1) not in slots:
            raise ValueError(f"unknown slot {match.group(1)!r} in {template!r}")
        return rng.choice(slots[match.group(1)])

    return SLOT.sub(pick, template)


def typo(text: str, rng: random.Random) -> str:
    """`text` with one slip in one of its longer words: a letter dropped, doubled,
    swapped with the next or replaced by a neighbour on the keyboard."""
    words = text.split(" ")
    long = [i for i, w in enumerate(words) if len(w) >= 4 and w.isalpha()]
    if not long:
        return text
    i = rng.choice(long)
    word, at = words[i], rng.randrange(1, len(words[i]) - 1)
    kind = rng.randrange(4)
    if kind == 0:
        word = word[:at] + word[at + 1 :]
    elif kind == 1:
        word = word[:at] + word[at] + word[at:]
    elif kind == 2:
        word = word[: at - 1] + word[at] + word[at - 1] + word[at + 1 :]
    else:
        key = KEYBOARD.find(word[at].lower())
        near = KEYBOARD[key + rng.choice((-1, 1))] if 0 < key < len(KEYBOARD) - 1 else "e"
        word = word[:at] + (near if near != " " else "a") + word[at + 1 :]
    words[i] = word
    return " ".join(words)


def test_groups(groups: Iterable[str]) -> set[str]:
    """The held-out groups: one in `TEST_SHARE` by hash, at least one per language and
    label that has three groups or more."""
    by_class: dict[str, set[str]] = defaultdict(set)
    for group in groups:
        by_class["/".join(group.split("/")[:2])].add(group)
    held = set()
    for members in by_class.values():
        ranked = sorted(members, key=lambda g: zlib.crc32(g.encode()))
        chosen = {g for g in ranked if zlib.crc32(g.encode()) % TEST_SHARE == 0}
        held |= chosen or ({ranked[0]} if len(ranked) >= 3 else set())
    return held
