"""Words the planner reads in five languages (English, Italian, Spanish, German,
French), as ``chat_service.menu.normalise`` leaves them: lower case, no accents
("für" is "fur", "mañana" is "manana"), apostrophes as spaces."""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


def _table(spec: dict[T, str]) -> dict[str, T]:
    """{meaning: "word, other word"} as {word: meaning}."""
    return {w.strip(): meaning for meaning, words in spec.items() for w in words.split(",")}


# A diet or an allergen named in a message (common typos and plurals included).
DIET_WORDS = _table(
    {
        "vegan": (
            "vegan, vegano, vegana, vegani, vegane, veganos, veganas, veganes, "
            "veganen, veganer, vegetalien, vegetalienne"
        ),
        "vegetarian": (
            "vegetarian, vegetariano, vegetariana, vegetariani, vegetarianos, "
            "vegetarisch, vegetarische, vegetarisches, vegetarien, vegetarienne, "
            "vegetariens, veggie"
        ),
        "gluten_free": (
            "gluten free, gluten-free, glutenfree, glutenfrei, glutenfreie, "
            "glutenfreies, senza glutine, sin gluten, sans gluten, celiac, coeliac, "
            "celiaco, celiaca, zoliakie, coeliaque"
        ),
        "dairy_free": "dairy free, dairy-free, lactose, lactosa, lattosio, laktosefrei",
        "spicy": (
            "spicy, hot, piccante, piccanti, picante, picantes, scharf, scharfe, "
            "scharfes, epice, epices, epicee"
        ),
    }
)
ALLERGEN_WORDS = _table(
    {
        "gluten": "gluten, glutine, wheat, grano, trigo, weizen, ble",
        "dairy": (
            "dairy, milk, lactose, cheese, latte, latticini, lattosio, formaggio, "
            "leche, lacteos, lactosa, queso, milch, laktose, kase, lait, fromage"
        ),
        "egg": "egg, eggs, uova, uovo, huevo, huevos, ei, eier, oeuf, oeufs",
        "nuts": (
            "nut, nuts, walnut, almond, hazelnut, noci, frutta secca, "
            "frutta a guscio, nueces, frutos secos, nuss, nusse, noix, "
            "fruits a coque"
        ),
        "peanuts": (
            "peanut, peanuts, arachidi, cacahuetes, cacahuete, mani, erdnuss, erdnusse, arachides"
        ),
        "soy": "soy, soya, soia, soja",
        "fish": "fish, pesce, pescado, fisch, poisson",
        "shellfish": (
            "shellfish, shrimp, prawn, prawns, crostacei, frutti di mare, mariscos, "
            "marisco, meeresfruchte, schalentiere, crustaces, fruits de mer"
        ),
        "sesame": "sesame, sesamo, sesam",
        "celery": "celery, sedano, apio, sellerie, celeri",
        "mustard": "mustard, senape, mostaza, senf, moutarde",
    }
)
# Words before allergens that mean "I want it with" rather than "without".
WITH = r"\b(with|contains? lots of|extra|con|mit|avec)\b"
AVOID = (
    r"\b(allerg|alerg|intoleran|without|free|no |avoid|cannot|can t|cant|senza|sin |ohne|"
    r"sans|evit|vermeid|sensib)"
)
# Quantities and party sizes in words.
NUMBER_WORDS = _table(
    {
        1: "a, an, one, un, una, uno, ein, eine, einen, une",
        2: "two, due, dos, zwei, deux",
        3: "three, tre, tres, drei, trois",
        4: "four, quattro, cuatro, vier, quatre",
        5: "five, cinque, cinco, funf, cinq",
        6: "six, sei, seis, sechs",
        7: "seven, sette, siete, sieben, sept",
        8: "eight, otto, ocho, acht, huit",
        9: "nine, nove, nueve, neun, neuf",
        10: "ten, dieci, diez, zehn, dix",
    }
)
# How many of us: "for 4", "per 4", "para 4", "fur 4", "pour 4", "4 people"...
PARTY = (
    r"\b(?:for|party of|table for|per|para|fur|pour|siamo|somos|sind wir|nous sommes|de)\s+"
    r"(\d{1,2}|[a-z]+)\b(?!\s*(?::\d|h\d|uhr\b|pm\b|am\b(?!\s+[a-z])))|"
    r"\b(\d{1,2}|[a-z]+)\s*(?:people|persons|person|persone|personas|personen|personnes|"
    r"guests|ospiti|invitados|gaste|couverts|pax|of us|adults)\b"
)
AT_HOUR = r"\b(?:at|um|alle|a las|a la|vers|verso)\s+(\d{1,2})\b(?!\s*(?:people|person))"
# "7pm", "19h", "20 Uhr"; "7 am" only where no word follows ("für 2 am Montag" is German)
HOUR = r"\b(\d{1,2})\s*(pm|h|uhr|heures|heure)\b|\b(\d{1,2})\s*(am)\b(?!\s+[a-z])"

WEEKDAY_WORDS = _table(
    {
        "monday": "monday, lunedi, lunes, montag, lundi",
        "tuesday": "tuesday, martedi, martes, dienstag, mardi",
        "wednesday": "wednesday, mercoledi, miercoles, mittwoch, mercredi",
        "thursday": "thursday, giovedi, jueves, donnerstag, jeudi",
        "friday": "friday, venerdi, viernes, freitag, vendredi",
        "saturday": "saturday, sabato, sabado, samstag, samedi",
        "sunday": "sunday, domenica, domingo, sonntag, dimanche",
    }
)
RELATIVE_DAYS = _table(
    {
        "today": "today, tonight, oggi, stasera, hoy, heute, aujourd hui, ce soir",
        "tomorrow": "tomorrow, domani, manana, demain, morgen",
    }
)
BOOK = (
    r"\b(book|reserve|reservation|table for|prenot|reserv|buch|tavolo per|mesa para|"
    r"tisch fur|table pour)"
)
REMOVE = (
    r"\b(remove|delete|cancel|take off|no more|without the|drop|togli|rimuovi|elimina|"
    r"cancella|quita|quitar|borra|cancela|entferne|entfernen|streiche|losche|storniere|"
    r"enleve|enlever|enlevez|retire|retirer|retirez|supprime|supprimer|supprimez|annule|"
    r"annulez|togliete|quite|quitad)\b"
)
PLACE = (
    r"\b(place|confirm|checkout|check out|send it|go ahead|that s all|that is all|"
    r"thats all|finali[sz]e|submit|conferma|confermo|e tutto|basta cosi|confirmar|confirmo|"
    r"es todo|eso es todo|bestatige|bestatigen|abschicken|das ist alles|aufgeben|"
    r"confirme|confirmer|c est tout|valider|valide)\b"
)
SHOW = (
    r"\b(my order|my cart|the order so far|total|what did i order|in my basket|"
    r"il mio ordine|mio ordine|totale|mi pedido|meine bestellung|summe|gesamt|"
    r"ma commande|mon panier)\b"
)
MAX_PRICE = (
    r"\b(?:under|below|less than|cheaper than|max|up to|sotto i|sotto|meno di|menos de|"
    r"por debajo de|unter|bis|moins de|jusqu a)\s*(\d{1,3})"
)

# Menu sections named in a message, in each language (singular forms are enough:
# the words are matched as prefixes).
CATEGORY_WORDS = {
    "starters": "starter antipast entrante vorspeise entree appetizer",
    "soups": "soup zupp minestr sopa suppe soupe",
    "salads": "salad insalat ensalad salat salade",
    "pasta": "pasta pates",
    "pizza": "pizz",
    "mains": "main secondi principa hauptgericht",
    "sides": "side contorn guarnicion beilage accompagnement",
    "desserts": "dessert dolc postre nachspeise nachtisch",
    "drinks": "drink bevand bebida getrank boisson beer birr cerveza bier biere wine vino "
    "wein vin coffee caffe cafe kaffee",
}
