"""Hand-weighted keyword scores per intent: one input of the intent model.

This was the whole stage-1 classifier until issue 26 (84.8 % on a blind multilingual set);
now ``chat_service.classifier`` turns its scores into two or three features of the n-gram
model ("k:best:order", "k:hit:menu"), which lifts the model's held-out accuracy by a few
points (``scripts.train_classifier --no-keywords`` measures it). It knows the project's
dish names, which the n-gram model cannot learn for every menu.

Every label has weighted terms: a word (`menu`), a prefix (`reserv*`) or a phrase
(`what time`). A message scores the sum of the weights of the distinct terms it contains;
the best label wins, ties go to the label earlier in `PRIORITY`, and a message whose best
score stays under `MIN_SCORE` is `other`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

LABELS = (
    "menu",
    "order",
    "reservation",
    "hours_location",
    "allergy_dietary",
    "small_talk",
    "other",
)
# The more specific intent wins a tie: "vegan pizza?" is a dietary question before a menu one.
PRIORITY = (
    "allergy_dietary",
    "reservation",
    "order",
    "hours_location",
    "menu",
    "small_talk",
    "other",
)
MIN_SCORE = 1.0
MAX_CHARS = 2000  # past this a chat message is noise; the cap keeps classify() bounded

DISH_WEIGHT = 1.0  # naming a dish hints at the menu...
QUANTITY_DISH_WEIGHT = 2.5  # ...and "two margheritas" is an order
QUANTITIES = frozenset(
    "couple one two three four five six seven eight nine ten "
    "un una uno due tre dos tres ein eine einen zwei drei deux trois".split()
)
FOOD_WORDS = frozenset(
    "pizza pasta wine beer coffee espresso cappuccino tea water juice coke cola soda "
    "lemonade dessert drink starter appetizer antipasti soup salad seafood fish steak "
    "meat chicken burger fries bread cheese sushi noodle".split()
)
# Words of dish names that say nothing about the dish ("Chianti Classico (glass)").
NAME_STOPWORDS = frozenset(
    "with della dello delle alla alle allo dell from house casa free gluten vegan "
    "classico glass bottle mixed style small large".split()
)
MATH = re.compile(r"\b\d+ (?:times|plus|minus|x|divided by) \d+\b")

# label -> weight -> comma-separated terms; `*` ends a prefix, spaces make a phrase.
PATTERNS: dict[str, dict[float, str]] = {
    "menu": {
        3.0: "menu*, speisekarte, special*, of the day, del giorno, del dia, du jour, "
        "tagesgericht*",
        2.0: "recommend*, recomend*, reccomend*, suggest*, popular, whats good, pric*, how much, "
        "cost*, serve, consiglia*, recomienda*, empfehl*, conseill*, prezz*, precio*, preis*, "
        "prix, cuesta, kostet",
        1.5: "dish*, piatt*, plato*, plat, gericht*, karte, carta, carte, cheap*, expensive, "
        "whats in, comes with, come with, how big, portion*, what kind of, what type of",
        1.0: "best, signature, taste*, fresh, kids, anything with",
        0.5: "do you have, do u have, have you got, do you do, good, options",
    },
    "order": {
        3.0: "takeaway, take away, takeout, take out, para llevar, asporto, a emporter, "
        "zum mitnehmen, mitnehmen, bestell*, checkout",
        2.5: "order*, ordin*, pedir, pedido, commande, commander, deliver*, ill have, i will have, "
        "lieferung, liefern, bill, the check, la cuenta, il conto, rechnung",
        2.0: "pickup, pick up, collect, to go, gimme, ill take, ill get, well have, id like the, "
        "ill go with, well go with, the usual, check out, cart, basket",
        1.5: "can i get, could i get, can i have, could i have, add, remove, take off, instead of, "
        "make that, forget the, scratch the, hurry, my order, my food",
        1.0: "extra, asap, confirm, pay, give me, another, id like a, make it",
        0.5: "please, pls, plz",
    },
    "reservation": {
        3.0: "reserv*, resev*, rezerv*, prenot*",
        2.5: "book*, tisch, tavol*, mesa, walk in, walkin",
        1.5: "table*, free table, party of, group of, guest, availability, available, anniversary, "
        "birthday, hold the table, space for, room for, save us, be there at, of us",
        1.0: "people, ppl, pax, person, persone, personas, personen, personnes, seat, seating, "
        "sit, outside, terrace, spot, friends",
        0.5: "cancel, change, move, tonight",
    },
    "hours_location": {
        3.0: "address, adress, adresse, indirizzo, direccion, parking, directions, horaire*, "
        "horario*, orari*, offnungszeit*, oeffnungszeit*, phone number",
        2.5: "hours, located, location, get there, get to you, how do i get to, situe*, find you, "
        "call you, reach you, your number",
        2.0: "open*, close*, closing, what time, wat time, wot time, how late, a che ora, "
        "a que hora, apri*, apert*, abre*, abiert*, offen, geoffnet, ouvert*, cierr*, chiud*, "
        "chius*, schlie*, geschlossen, ferme*, how far, telefon*, telephone, contact, anfahrt, "
        "park, bike rack, u bahn, ubahn, s bahn",
        1.5: "wo, dove, donde, where, street, wann, when do you, until, till, holiday*, christmas, "
        "easter, far from, station, map, directions to",
        1.0: "near, nearby, kitchen, bus, tram, metro, airport, phone, call, wheelchair, "
        "accessible",
        0.5: "number, monday*, tuesday*, wednesday*, thursday*, friday*, saturday*, sunday*, "
        "weekend, domenica, sabato, domingo, sabado, sonntag, samstag, dimanche, samedi",
    },
    "allergy_dietary": {
        3.0: "allerg*, alerg*, vegan*, vegetar*, gluten*, coeliac*, celiac*, zoliakie, lacto*, "
        "lakto*, lattos*, intoleran*, halal, kosher, cross contamination, pescatarian, pescetarian",
        2.5: "dairy, shellfish, peanut*, plant based, erdnuss*, arachid*, cacahuete*",
        2.0: "nut, nusse, nuss, noci, noix, sesame, soy, soja, contain*, diet*, restriction*, "
        "keto, low carb, low fat, sugar free, meat free, diabet*, veggie, pregnan*, msg, gelatin*",
        1.5: "egg, milk, mustard, celery, pork, schwein*, maiale, cerdo, porc, safe, without, "
        "senza, sin, ohne, sans, almond*, walnut*, fryer, calorie*",
        1.0: "ingredient*",
    },
    "small_talk": {
        3.0: "good job, great job, nice job, well done",
        2.5: "how are you, how r u, how are u, are you a bot, are you real, who are you, "
        "what can you do, joke*",
        2.0: "hi, hello, hey, hiya, heya, howdy, ciao, hola, hallo, salut, bonjour, bonsoir, "
        "buongiorno, buonasera, buenos dias, buenas tardes, buenas noches, guten morgen, "
        "guten tag, guten abend, good morning, good afternoon, good evening, good night, whats up, "
        "wassup, thank*, thx, grazie, gracias, danke, merci, vielen dank, bye, goodbye, tschuss, "
        "arrivederci, adios, au revoir, take care, hows it going, how is it going, how are things, "
        "come stai, como estas, wie gehts, ca va, bot, robot, your name, talking to, funny, "
        "your day, youre the best",
        1.5: "see you, see ya, cheers, ty, appreciate*, have a nice, have a good, lol, haha, "
        "awesome, useless, stupid, helpful, human, thats all, sup",
        1.0: "yo, cool, great, perfect, amable, nice, morning, sorry",
        0.7: "ok, okay",
    },
    "other": {
        3.0: "weather, wetter, meteo, forecast, hiring, career*, flight*, vacanc*, password, "
        "laptop, homework, bitcoin, crypto*, poem, essay, capital of, translate, movie*, "
        "headlines, exchange rate, landlord, dentist*, doctor, square root, cover letter, salary, "
        "recipe*",
        2.5: "rain*, snow*, temperature, internet, netflix, football, soccer, news, tiempo, "
        "lluvia, pioggia, regen, politic*, election*, president, job",
        2.0: "battery, computer, film, story, calculate, math*, stock*, heating, rent, dollar*, "
        "hospital, taxi, hotel, invent*, history of, gym, workout, exercise, running",
        1.0: "fix, broken, game, apply, market",
    },
}


@dataclass(frozen=True)
class Term:
    """One pattern: its words (a trailing `*` makes a word a prefix), label and weight."""

    words: tuple[str, ...]
    label: str
    weight: float


def normalise(text: str) -> str:
    """Lower-case ASCII words and digits separated by single spaces; accents are dropped."""
    decomposed = unicodedata.normalize("NFKD", text[:MAX_CHARS].casefold())
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    plain = re.sub(r"['`\u2019]", "", plain)  # "what's" -> "whats", "i'll" -> "ill"
    plain = re.sub(r"(\d)([a-z])", r"\1 \2", plain)  # "7pm" -> "7 pm"
    plain = re.sub(r"([a-z])\1{2,}", r"\1", plain)  # "heyyy" -> "hey", "hiii" -> "hi"
    return " ".join(re.sub(r"[^a-z0-9]+", " ", plain).split())


def stem(token: str) -> str:
    """A crude singular: "pizzas" -> "pizza", "mondays" -> "monday"."""
    return token[:-1] if len(token) > 3 and token.endswith("s") else token


def word_matches(word: str, token: str) -> bool:
    if word.endswith("*"):
        return token.startswith(word[:-1])
    return token == word or stem(token) == word


def parse_patterns(patterns: dict[str, dict[float, str]]) -> list[Term]:
    """The terms of a `PATTERNS`-shaped table."""
    terms = []
    for label, by_weight in patterns.items():
        for weight, spec in by_weight.items():
            for raw in spec.split(","):
                words = tuple(raw.split())
                if words[0].endswith("*") and len(words[0]) < 4:
                    raise ValueError(f"prefix {words[0]!r} is shorter than three letters")
                terms.append(Term(words, label, weight))
    return terms


def dish_vocabulary(menu_terms: Iterable[str]) -> frozenset[str]:
    """Singular words of dish names and categories, without the filler words."""
    words = {stem(word) for term in menu_terms for word in normalise(term).split()}
    return FOOD_WORDS | {w for w in words if len(w) >= 4 and w not in NAME_STOPWORDS}


class KeywordScorer:
    """Weighted keyword, prefix and phrase matching; microseconds per message."""

    def __init__(self, menu_terms: Iterable[str] = ()) -> None:
        self._dishes = dish_vocabulary(menu_terms)
        self._exact: dict[str, list[Term]] = {}
        self._prefix: dict[str, list[Term]] = {}
        for term in parse_patterns(PATTERNS):
            first = term.words[0]
            if first.endswith("*"):
                self._prefix.setdefault(first[:3], []).append(term)
            else:
                self._exact.setdefault(first, []).append(term)

    def classify(self, text: str) -> str:
        """The keywords' label for `text`; `other` when nothing points anywhere."""
        return best_label(self.scores(text))

    def scores(self, text: str) -> dict[str, float]:
        """The score of every label for `text`, in `LABELS` order."""
        normal = normalise(text)
        tokens = normal.split()
        totals = dict.fromkeys(LABELS, 0.0)
        for term in self._matched(tokens):
            totals[term.label] += term.weight
        dishes = [i for i, token in enumerate(tokens) if self._is_dish(token)]
        if dishes:
            totals["menu"] += DISH_WEIGHT
        if any(is_quantity(t) for i in dishes for t in tokens[max(0, i - 2) : i]):
            totals["order"] += QUANTITY_DISH_WEIGHT
        if MATH.search(normal):
            totals["other"] += 3.0
        return totals

    def _is_dish(self, token: str) -> bool:
        return token in self._dishes or stem(token) in self._dishes

    def _matched(self, tokens: Sequence[str]) -> set[Term]:
        found: set[Term] = set()
        for i, token in enumerate(tokens):
            for term in self._candidates(token):
                ahead = tokens[i : i + len(term.words)]
                if len(ahead) == len(term.words) and all(map(word_matches, term.words, ahead)):
                    found.add(term)
        return found

    def _candidates(self, token: str) -> list[Term]:
        candidates = self._exact.get(token, []) + self._prefix.get(token[:3], [])
        singular = stem(token)
        return candidates + self._exact.get(singular, []) if singular != token else candidates


def best_label(scores: dict[str, float]) -> str:
    """The top label of `scores` (ties by `PRIORITY`), `other` under `MIN_SCORE`."""
    best = max(PRIORITY, key=lambda label: scores[label])
    return best if scores[best] >= MIN_SCORE else "other"


def is_quantity(token: str) -> bool:
    return token.isdigit() or token in QUANTITIES
