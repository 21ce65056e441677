"""One text normaliser for the whole tool: corpus checks, importers and answer scoring share it.

`normalize` maps surface variants of the same fact onto one string, so "Thirty days", "30-day"
and "30 days." compare equal, as do "$1,200.00" and "1200 dollars". It is a comparison form,
never shown to users. `contains_fact` asks whether a short key fact occurs in a text as a whole
run of tokens (so "$45" is not found in "$450"), after normalisation and plural folding.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

_UNITS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen".split())}
_TENS = {w: 10 * i for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), 2)}
_SCALES = {"hundred": 100, "thousand": 1_000, "million": 1_000_000}
# "second" is left alone: "30 seconds" is far more common in help texts than the ordinal.
_ORDINALS = {"first": "1st", "third": "3rd", "fourth": "4th", "fifth": "5th", "sixth": "6th",
             "seventh": "7th", "eighth": "8th", "ninth": "9th", "tenth": "10th", "eleventh": "11th",
             "twelfth": "12th", "fifteenth": "15th", "twentieth": "20th", "thirtieth": "30th"}
_ARTICLES = {"a", "an", "the"}
# Currency is dropped next to a number: "$7.95", "7.95 dollars" and "USD 7.95" are one fact.
# ("pounds" is not a currency word here: it is a weight as often as money.)
_CURRENCY_SYMBOLS = "$€£¥"
_CURRENCY_WORDS = r"(?:dollars?|usd|euros?|eur|gbp|cad|aud)"

_WORD_NUMBER = set(_UNITS) | set(_TENS) | set(_SCALES)


def _words_to_digits(tokens: list[str]) -> list[str]:
    """Replace runs of number words by their value: ["twenty", "one", "days"] -> ["21", "days"]."""
    out: list[str] = []
    i = 0
    while i < len(tokens):
        if tokens[i] not in _WORD_NUMBER or tokens[i] in _SCALES:
            out.append(_ORDINALS.get(tokens[i], tokens[i]))
            i += 1
            continue
        total, current, last = 0, 0, None
        while i < len(tokens):
            w = tokens[i]
            if w == "and" and last == "scale" and i + 1 < len(tokens) and tokens[i + 1] in _UNITS | _TENS:
                i += 1  # "one hundred and twenty"
                continue
            if w in _UNITS:
                # "two three" is two numbers; "twenty one" and "hundred one" are one.
                if last == "unit" or (last == "tens" and (_UNITS[w] >= 10 or current % 10)):
                    break
                current += _UNITS[w]
                last = "unit"
            elif w in _TENS:
                if last in ("unit", "tens"):
                    break
                current += _TENS[w]
                last = "tens"
            elif w in _SCALES:
                if w == "hundred":
                    current = max(current, 1) * 100
                else:
                    total += max(current, 1) * _SCALES[w]
                    current = 0
                last = "scale"
            else:
                break
            i += 1
        out.append(str(total + current))
    return out


@lru_cache(maxsize=65536)
def normalize(text: str) -> str:
    """Lower-case comparison form: digits for number words, no punctuation, articles or currency."""
    s = unicodedata.normalize("NFKC", text).lower()
    s = s.replace("\u2019", "'").replace("\u2018", "'")
    s = re.sub(r"(?<=\d),(?=\d{3}\b)", "", s)  # 1,200 -> 1200
    s = re.sub(r"\b(\d{1,2}):00\b", r"\1", s)  # 9:00 am -> 9 am
    s = re.sub(r"(\d)\s*[-\u2013\u2014]\s*(?=\d)", r"\1 to ", s)  # 3-5 days -> 3 to 5 days
    s = re.sub(r"\bper\s+cent\b|%", " percent ", s)
    s = re.sub(rf"[{_CURRENCY_SYMBOLS}]", " ", s)
    s = re.sub(rf"\b{_CURRENCY_WORDS}\s+(?=\d)", " ", s)  # USD 7.95
    s = re.sub(rf"(?<=\d)\s*{_CURRENCY_WORDS}\b", " ", s)  # 7.95 dollars
    s = re.sub(r"(\d)\.(\d*?)0+\b", lambda m: m.group(1) + ("." + m.group(2) if m.group(2) else ""), s)  # 45.00 -> 45
    s = re.sub(r"'", "", s)  # don't -> dont, customer's -> customers
    s = re.sub(r"[^\w\s.]|_", " ", s)
    s = re.sub(r"(?<!\d)\.|\.(?!\d)", " ", s)  # keep only decimal points
    s = re.sub(r"(?<=\d)(?=[a-z])(?!(?:st|nd|rd|th)\b)|(?<=[a-z])(?=\d)", " ", s)  # 250g -> 250 g, eu42 -> eu 42
    tokens = [t for t in _words_to_digits(s.split()) if t not in _ARTICLES]
    return " ".join(tokens)


def _fold(token: str) -> str:
    """Light plural folding for matching: days -> day, boxes -> box, deliveries -> delivery."""
    if len(token) <= 3 or not token.endswith("s") or token.endswith(("ss", "us", "is")):
        return token
    if token.endswith("ies") and len(token) > 4:
        return token[:-3] + "y"
    if token.endswith(("xes", "ches", "shes", "sses", "zzes")):
        return token[:-2]
    return token[:-1]


def tokens(text: str, fold: bool = True) -> list[str]:
    """Normalised tokens, plural-folded unless `fold=False`: the unit `contains_fact` matches on."""
    words = normalize(text).split()
    return [_fold(t) for t in words] if fold else words


def contains_fact(text: str, fact: str) -> bool:
    """True when `fact` occurs in `text` as a contiguous run of whole normalised tokens.

    A fact that normalises to nothing (e.g. "the") is never contained: it cannot be checked.
    """
    needle = tokens(fact)
    if not needle:
        return False
    hay = tokens(text)
    n = len(needle)
    first = needle[0]
    return any(hay[i:i + n] == needle for i in range(len(hay) - n + 1) if hay[i] == first)
