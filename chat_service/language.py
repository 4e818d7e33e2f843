"""The language a guest writes in: 'en', 'it', 'es', 'de' or 'fr'.

A placeholder until the stage-1 classifier's own detector lands (branch
``classifier``, same signature): words only one of the languages uses, and letters
only some use, counted; English when nothing points elsewhere.
"""

from __future__ import annotations

import re
import unicodedata

LANGUAGES = ("en", "it", "es", "de", "fr")
WORDS = {
    "en": "the is are do you have what how much please my me want with for and your can could "
    "would book order hours open opening thanks thank hello hi yes where when which there "
    "table dishes menu anything something help price cost costs",
    "it": "il lo gli della delle dei che per con avete vorrei posso sono siete quanto costa "
    "grazie ciao buongiorno buonasera tavolo prenotare ordine orari aperti apertura piatti "
    "senza anche ho è e dove siamo qual quali fa tempo domani mille persone alle ordinare "
    "confermo tutto prenota chiuso ecco cosa abbiamo nostro nostra "
    "lunedì martedì mercoledì giovedì venerdì sabato domenica",
    "es": "el los las del que por para con tienen tenéis quiero puedo cuánto cuesta cuanto "
    "gracias hola buenas mesa reservar pedido horario abierto platos sin y mi dónde donde "
    "estáis qué tal cuál vuestro muchas adiós pedir algo personas quita eso todo favor "
    "lunes martes miércoles jueves viernes sábado domingo película noche recomendar esto "
    "tenemos nuestra nuestro",
    "de": "der die das ein eine einen und ist sind habt haben ich möchte bitte danke hallo "
    "guten tisch buchen bestellung öffnungszeiten geöffnet gerichte ohne mit für um was wie "
    "viel kostet wann wo gibt euch euer eure zu essen uhr personen schön wird wetter morgen "
    "montag dienstag mittwoch donnerstag freitag samstag sonntag alles abschicken zeigt wir "
    "unsere unser",
    "fr": "le les une des du et est sont vous avez je voudrais puis merci bonjour bonsoir "
    "salut réserver commande horaires ouvert plats sans avec pour quels quelles combien où "
    "se trouve beaucoup au revoir enlevez plaît tout confirme personnes aux mes devoirs "
    "lundi mardi mercredi jeudi vendredi samedi dimanche ce soir que parmi coûte voici nous "
    "avons notre",
}
LETTERS = {"es": "ñ¿¡", "de": "ßäöü", "fr": "çœêâîôûë", "it": "ìò"}
_VOCAB = {lang: frozenset(words.split()) for lang, words in WORDS.items()}


def _tokens(text: str) -> list[str]:
    return re.findall(r"[^\W\d_]+", unicodedata.normalize("NFC", text.lower()))


def language_of(text: str) -> str:
    """The language of ``text`` (English when unsure)."""
    scores = dict.fromkeys(LANGUAGES, 0.0)
    for token in _tokens(text):
        for lang in LANGUAGES:
            if token in _VOCAB[lang]:
                scores[lang] += 1.0
    lowered = text.lower()
    for lang, letters in LETTERS.items():
        scores[lang] += 0.5 * sum(lowered.count(c) for c in letters)
    best = max(LANGUAGES, key=lambda lang: scores[lang])
    return best if scores[best] > scores["en"] else "en"
