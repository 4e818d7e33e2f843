"""What a model wrote, checked before a guest sees it or the history keeps it.

A model's text is kept only when it is whole sentences (a cut-off one is dropped),
in the guest's language, not empty, not tool syntax, not a repeat of an earlier
answer, and invents nothing: every number, dish, food, diet, day or month it names
must be in the turn's facts (or, in small talk, in the guest's own message), and
where the facts carry an outcome it says no "no", "sorry" or "cannot" against it.
``problems`` lists what is wrong ([] when the text may stand).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from chat_service.language import written_in
from chat_service.menu import DIETS, Restaurant, normalise
from chat_service.phrases import every_language
from chat_service.words import CATEGORY_WORDS, DIET_WORDS

MAX_SENTENCES = 2
COPIED = 0.6  # a sentence this much made of the guest's or the facts' words is a copy
MAX_CHARS = 240
SENTENCE_END = re.compile(r"(?<=[.!?…])[\"»”)]*\s+")
TOOL_SYNTAX = re.compile(r"(?m)^\s*CALL\b|\bCALL\s+[a-z_]+|\{\s*\"|</?tool|```")
NUMBER = re.compile(r"\d+(?:[.,:]\d+)?")
# Words that turn an answer around: they may not stand beside an outcome the facts carry.
NEGATIONS = frozenset(
    "no not never none nothing cannot cant unable unfortunately sorry apologize apologies "
    "non nessun nessuna niente purtroppo spiacente dispiace impossibile "
    "nunca nada ningun ninguna lamentablemente desafortunadamente siento "
    "nicht kein keine keinen nichts leider entschuldigung bedauere "
    "ne pas jamais rien aucun aucune malheureusement desole desolee".split()
)
NEGATION_PHRASES = ("n t ", "don t", "do not", "we re out", "sold out", "lo siento", "mi dispiace")
# Words that say it worked: they may not stand beside a refusal.
AFFIRMATIONS = frozenset(
    "yes sure booked reserved confirmed added placed done certainly absolutely "
    "si certo certamente prenotato confermato aggiunto claro reservado confirmado anadido "
    "ja klar gebucht reserviert bestatigt hinzugefugt "
    "oui bien sur reservee confirmee ajoute".split()
)
# Claims a host model makes up about itself or the house.
CLAIMS = (
    "as a ",
    "as an ",
    "i m a ",
    "i am a ",
    "my name",
    "blogger",
    "chef",
    "discount",
    "free of charge",
    "gratis",
    "delivery",
    "parking",
    "the guest",
)
FOOD = frozenset(
    "pizza pasta lasagna lasagne burger hamburger sushi steak salad soup sandwich cake pie "
    "curry tofu chicken beef pork lamb veal fish salmon tuna shrimp prawn wine beer coffee "
    "tea juice dessert gelato ice cream risotto gnocchi ravioli spaghetti penne bread cheese "
    "mozzarella tiramisu cocktail vegetables meat seafood noodles rice fries "
    "insalata zuppa pollo manzo maiale pesce vino birra caffe dolce formaggio carne verdure "
    "ensalada sopa cerdo pescado cerveza cafe postre helado queso "
    "salat suppe huhn hahnchen rind schwein fisch wein bier kaffee kuchen kase fleisch "
    "salade soupe poulet boeuf porc poisson vin biere gateau glace fromage viande".split()
)
AMBIGUOUS = frozenset({"may", "march", "mars"})  # months that are everyday words too
PRICE_WORDS = frozenset("eur euro euros usd dollar dollars € $".split())


@dataclass(frozen=True)
class Check:
    """What a text is checked against: the turn's facts and the conversation so far."""

    restaurant: Restaurant
    lang: str
    facts: str  # the composed facts: what the text may name
    guest: str  # the guest's message
    earlier: tuple[str, ...] = ()  # the session's earlier answers
    outcome: str = "info"  # the facts' outcome (compose.Composed.outcome)
    required: tuple[str, ...] = ()  # what a whole answer must state


def whole_sentences(text: str, finish: str) -> str:
    """``text`` without a sentence the model was cut off in (``finish`` not "stop")."""
    text = text.strip()
    if finish == "stop" or not text:
        return text
    parts = SENTENCE_END.split(text)
    if re.search(r"[.!?…][\"»”)]*$", text):
        return text
    return " ".join(parts[:-1]).strip()


def first_sentences(text: str, limit: int = MAX_SENTENCES) -> str:
    return " ".join(SENTENCE_END.split(text.strip())[:limit]).strip()


def problems(text: str, check: Check, whole: bool = False) -> list[str]:
    """What is wrong with ``text`` (a sentence around the facts, or with ``whole`` an
    answer that must state them all); [] when it may stand."""
    if not text.strip():
        return ["empty"]
    if TOOL_SYNTAX.search(text):
        return ["tool syntax"]
    found = []
    plain = f" {normalise(text)} "
    if not whole and len(text) > MAX_CHARS:
        found.append("too long")
    if _repeats(plain, check.earlier):
        found.append("repeat")
    if check.outcome != "chat" and not whole and _copied(plain, check):
        found.append("a copy of the guest's words or the facts")
    if _stutters(_words(plain)):
        found.append("a stutter")
    allowed = _allowed(check)
    found += _invented(text, plain, check, allowed)
    if check.outcome in ("ok", "info") and _contradicts(plain):
        found.append("a negation beside the facts")
    if check.outcome == "refused" and set(_words(plain)) & AFFIRMATIONS:
        found.append("an affirmation beside a refusal")
    if any(claim in plain and claim not in allowed for claim in CLAIMS):
        found.append("a claim about itself or the house")
    if not written_in(_without_names(text, check.restaurant), check.lang):
        found.append(f"not in {check.lang}")
    if whole:
        decimal = _decimal(plain)
        found += [f"missing {f!r}" for f in check.required if _decimal(normalise(f)) not in decimal]
    return found


def _allowed(check: Check) -> str:
    """The text whose words and numbers may be named: the facts, and in small talk
    (no facts) the guest's message."""
    source = check.facts if check.outcome != "chat" else f"{check.facts} {check.guest}"
    return f" {normalise(source)} "


def _invented(text: str, plain: str, check: Check, allowed: str) -> list[str]:
    found = []
    numbers = {_number(n) for n in NUMBER.findall(allowed)}
    if any(_number(n) not in numbers for n in NUMBER.findall(text)):
        found.append("a number not in the facts")
    for item, _ in check.restaurant.mentioned(text):
        if f" {normalise(item.name)} " not in allowed:
            found.append(f"a dish not in the facts: {item.name}")
    tokens = set(_words(plain))
    vocabulary = _vocabulary()
    for token in sorted(tokens & vocabulary):
        if f" {token} " not in allowed and f" {token}s " not in allowed:
            found.append(f"a word not in the facts: {token}")
    if tokens & PRICE_WORDS - set(allowed.split()):
        found.append("a price word not in the facts")
    return found


def _words(plain: str) -> list[str]:
    """The words of normalised text, punctuation gone ("desole," is "desole")."""
    return re.findall(r"[a-z0-9]+", plain)


def _stutters(tokens: list[str]) -> bool:
    """Whether two words come twice in a row somewhere: a model going round in circles."""
    pairs = list(zip(tokens, tokens[1:], strict=False))
    return len(pairs) != len(set(pairs))


def _copied(plain: str, check: Check) -> bool:
    """Whether most of the sentence's words are the guest's or the facts' own."""
    mine = [w for w in _words(plain) if len(w) > 2]
    theirs = set(_words(normalise(f"{check.guest} {check.facts}")))
    return len(mine) >= 3 and sum(w in theirs for w in mine) / len(mine) >= COPIED


def _contradicts(plain: str) -> bool:
    return bool(set(_words(plain)) & NEGATIONS) or any(p in plain for p in NEGATION_PHRASES)


def _repeats(plain: str, earlier: tuple[str, ...]) -> bool:
    mine = plain.strip()
    for answer in earlier:
        theirs = normalise(answer)
        if mine == theirs or (len(mine) >= 12 and mine in theirs):
            return True
    return False


def _without_names(text: str, restaurant: Restaurant) -> str:
    """``text`` without dish names and numbers (Italian dish names say nothing about the
    guest's language)."""
    stripped = text
    for item in restaurant.items:
        stripped = stripped.replace(item.name, " ")
    return NUMBER.sub(" ", stripped)


def _decimal(text: str) -> str:
    """Decimal commas as points: "7,50 eur" and "7.50 eur" compare equal."""
    return re.sub(r"(\d),(\d)", r"\1.\2", text)


def _number(raw: str) -> str:
    return raw.replace(",", ".")


@lru_cache(maxsize=1)
def _vocabulary() -> frozenset[str]:
    """Words that name a food, a diet, a day or a month, in the five languages."""
    words = set(FOOD) | {w for w in DIET_WORDS if " " not in w and w != "hot"} | set(DIETS)
    words |= {w for spec in CATEGORY_WORDS.values() for w in spec.split() if len(w) > 4}
    for lang in every_language():
        for name in (*lang.raw["weekdays"], *lang.raw["months"]):
            words.add(normalise(name))
    return frozenset(words - AMBIGUOUS)
