"""One text normaliser for the whole tool: corpus checks, importers, training and answer scoring share it.

`normalize` maps surface variants of the same fact onto one string, so "Thirty days", "30-day"
and "30 days." compare equal, as do "$1,200.00" and "1200 dollars", "eight hundred kilometres" and
"800 km", "3-5 days", "between 3 and 5 days" and "3 to 5 days". It is a comparison form, never
shown to users. `contains_fact` asks whether a short key fact occurs in a text as a whole run of
tokens (so "$45" is not found in "$450"), after normalisation and plural folding. `values` lists
the concrete numbers of a text with their unit, the claims a scorer checks. `sentences` splits
prose with pysbd.

Libraries do what they do best: `text2num` (alpha2digit) turns spelled numbers, compounds and
ordinals into digits ("a hundred and fifty" -> "150", "twenty-first" -> "21st"); pysbd splits
sentences without breaking "e.g." or "$7.95". What is left here is small tables: unit spellings,
currency, ranges, and the synonym table below.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from functools import lru_cache
from typing import NamedTuple

from text_to_num import alpha2digit

_ARTICLES = {"a", "an", "the"}
# Currency is dropped next to a number: "$7.95", "7.95 dollars" and "USD 7.95" are one fact.
# ("pounds" is not a currency word here: it is a weight as often as money.)
_CURRENCY_SYMBOLS = "$€£¥"
_CURRENCY_WORDS = r"(?:dollars?|usd|euros?|eur|gbp|cad|aud|bucks)"

# Unit spellings -> one canonical form. Long spellings are unambiguous anywhere; the short ones
# in _UNIT_AFTER_NUMBER only count right after a number ("5 h" is hours, "h" alone is not).
UNITS: dict[str, tuple[str, ...]] = {
    "km": ("kilometre", "kilometres", "kilometer", "kilometers", "kms"),
    "m": ("metre", "metres", "meter", "meters"),
    "cm": ("centimetre", "centimetres", "centimeter", "centimeters", "cms"),
    "mm": ("millimetre", "millimetres", "millimeter", "millimeters"),
    "mile": ("miles", "mi"),
    "kg": ("kilogram", "kilograms", "kilogramme", "kilogrammes", "kilo", "kilos", "kgs"),
    "g": ("gram", "grams", "gramme", "grammes", "gr", "gms"),
    "mg": ("milligram", "milligrams", "milligramme", "milligrammes"),
    "lb": ("lbs",),
    "oz": ("ounce", "ounces"),
    "l": ("litre", "litres", "liter", "liters", "ltr"),
    "ml": ("millilitre", "millilitres", "milliliter", "milliliters", "mls"),
    "hour": ("hours", "hrs", "hr"),
    "minute": ("minutes", "mins", "min"),
    "second": ("seconds", "secs", "sec"),
    "gb": ("gigabyte", "gigabytes"),
    "mb": ("megabyte", "megabytes"),
    "percent": ("pct",),
}
_UNIT_AFTER_NUMBER = {"h": "hour"}
_UNIT_OF = {alias: canon for canon, aliases in UNITS.items() for alias in aliases}

# Synonyms: phrases a careful reader takes as the same fact. Kept small on purpose; each pair is
# one a reference and a correct answer were seen to word differently. Left side -> right side.
SYNONYMS: dict[str, str] = {
    "working days": "business days",
    "working day": "business day",
    "work days": "business days",
    "workdays": "business days",
    "workday": "business day",
    "e-mail": "email",
    "free of charge": "free",
    "at no charge": "free",
    "at no cost": "free",
    "at no extra cost": "free",
    "at no additional cost": "free",
    "no charge": "free",
    "complimentary": "free",
    "no one": "nobody",  # or alpha2digit reads "no 1"
    "fortnight": "2 weeks",
    # (hours are not converted to minutes: a bare "24" key fact must still match "24 hours")
    "half an hour": "30 minutes",
    "quarter of an hour": "15 minutes",
    "an hour": "60 minutes",
    "24/7": "24 hours a day 7 days a week",  # a claim about hours, checked like one
    "12 noon": "12 pm",
    "noon": "12 pm",
    "midday": "12 pm",
    "a.m.": "am",
    "p.m.": "pm",
    "final": "last",
    "half price": "50 percent off",
    "half of": "50 percent of",  # "at most half of an order" (not "nine and a half", handled below)
    "half off": "50 percent off",
    "installments": "instalments",
    "installment": "instalment",
    "interest free payments": "interest free instalments",
    "interest-free payments": "interest free instalments",
}
# Exact conversions to one unit per dimension, so "70 mm" and "7 cm", "3 weeks" and "21 days" match.
# (Months and years are not whole numbers of days: they stay as they are.)
_CONVERT = {"km": ("mm", 1_000_000), "m": ("mm", 1000), "cm": ("mm", 10), "kg": ("g", 1000),
            "mg": ("g", 0.001), "l": ("ml", 1000), "week": ("day", 7), "weeks": ("days", 7),
            "year": ("month", 12), "years": ("months", 12)}
_DAYS = "(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)"
# Day abbreviations count only inside a range ("Tues-Sat"): "sat" and "sun" are words too.
DAY_ABBREVIATIONS = {"mon": "monday", "tue": "tuesday", "tues": "tuesday", "wed": "wednesday", "weds": "wednesday",
                      "thu": "thursday", "thur": "thursday", "thurs": "thursday", "fri": "friday", "sat": "saturday",
                      "sun": "sunday"}
_DAY_ABBREVIATION = "(?:" + "|".join(sorted(DAY_ABBREVIATIONS, key=len, reverse=True)) + ")"
_DAY_OR_ABBREVIATION = rf"(?:{_DAYS}|{_DAY_ABBREVIATION})"
_HALF_OF_DAY = {"morning": "am", "afternoon": "pm", "evening": "pm", "night": "pm"}
_MONTHS = "(?:january|february|march|april|may|june|july|august|september|october|november|december)"
_SCALE_WORDS = {"thousand": 1_000, "million": 1_000_000, "billion": 1_000_000_000}
_SYNONYM_RE = re.compile(r"\b(" + "|".join(re.escape(k) for k in sorted(SYNONYMS, key=len, reverse=True)) + r")\b")


def _num(x: float) -> str:
    return f"{x:.6f}".rstrip("0").rstrip(".")


def _time(m: re.Match, marker: str) -> str:
    """"6:30 pm" -> "18 30", "10 am" -> "10", "13:00" -> "13"; with a marker "18.30 oclock"."""
    h, mins, half = int(m.group(1)), m.group(2) or "00", (m.group(3) or "").replace(".", "")
    if half == "pm" and h < 12:
        h += 12
    elif half == "am" and h == 12:
        h = 0
    if marker:
        return f" {h}{'.' + mins if mins != '00' else ''} oclock "
    return f" {h}{' ' + mins if mins != '00' else ''} "


def _cents(m: re.Match) -> str:
    return f"{m.group(1)}.{int(m.group(2)):02d} dollars"


@lru_cache(maxsize=65536)
def normalize(text: str) -> str:
    """Lower-case comparison form: digits for number words, canonical units, no punctuation or currency."""
    return _normal_form(text, keep_currency=False)


@lru_cache(maxsize=65536)
def _normal_form(text: str, keep_currency: bool) -> str:
    # keep_currency: amounts get a "usd" token after them (any currency), so `values` can tell a
    # price from a count; `normalize` drops it so "$7.95" and "7.95" compare equal.
    cur = " usd " if keep_currency else " "
    s = unicodedata.normalize("NFKC", text).lower()
    s = s.replace("\u2019", "'").replace("\u2018", "'")
    s = _SYNONYM_RE.sub(lambda m: SYNONYMS[m.group(1)], s)
    # "Tues-Sat", "Tuesday–Saturday" -> "tuesday to saturday" (before hyphens between words go)
    s = re.sub(rf"\b({_DAY_OR_ABBREVIATION})\.?\s*(?:[-\u2013\u2014]|\bto\b|\bthrough\b|\bthru\b)\s*({_DAY_OR_ABBREVIATION})\b\.?",
               lambda m: " to ".join(DAY_ABBREVIATIONS.get(d, d) for d in m.groups()), s)
    s = re.sub(r"(?<=[a-z])-(?=[a-z])", " ", s)  # thirty-day -> thirty day, so text2num sees the number
    s = re.sub(r"\b(can|will|shall)(?:'t| ?not)\b", lambda m: {"can": "can", "will": "will", "shall": "shall"}[m.group(1)]
               + " not", s)
    s = s.replace("won't", "will not").replace("shan't", "shall not")
    s = re.sub(r"(?<=[a-z])n't\b", " not", s)  # doesn't -> does not, so "does not earn" matches
    s = re.sub(r"(?<=\d),(?=\d{3}\b)", "", s)  # 1,200 -> 1200
    s = re.sub(r"\b(\d+(?:\.\d+)?) (thousand|million|billion)\b",
               lambda m: _num(float(m.group(1)) * _SCALE_WORDS[m.group(2)]), s)  # 1.2 million -> 1200000
    s = alpha2digit(s, "en", threshold=0)
    s = re.sub(r"\b(\d+) and (?:a )?half\b", r"\1.5", s)  # nine and a half -> 9.5
    s = re.sub(r"\b(\d+) (numbers|figures)\b", r"\1 digits", s)
    # dates: "March 3rd", "3rd of March" and "3 March" -> "3 march"
    s = re.sub(rf"\b({_MONTHS}) (\d{{1,2}})(?:st|nd|rd|th)?\b(?!:)", r"\2 \1", s)
    s = re.sub(rf"\b(\d{{1,2}})(?:st|nd|rd|th)? (?:of )?({_MONTHS})\b", r"\1 \2", s)
    # "6 in the evening" -> "6 pm"
    s = re.sub(r"\b(\d{1,2}(?::\d{2})?) (?:o'?clock )?(?:in the |at )(morning|afternoon|evening|night)\b",
               lambda m: f"{m.group(1)} {_HALF_OF_DAY[m.group(2)]}", s)
    s = re.sub(r"(?<![\d.:])\b(\d{1,2})(?::(\d{2}))?\s*(am|pm)\b", lambda m: _time(m, cur.strip()), s)
    s = re.sub(r"(?<![\d.:])\b(\d{1,2}):(\d{2})()\b(?!:)", lambda m: _time(m, cur.strip()), s)
    # "14 dollars 95", "14 dollars and 95 cents" -> 14.95 dollars; "95 cents" -> 0.95 dollars
    s = re.sub(rf"(?<![\d.])(\d+) ?{_CURRENCY_WORDS} (?:and )?(\d{{1,2}}) cents?\b", _cents, s)
    s = re.sub(rf"(?<![\d.])(\d+) ?{_CURRENCY_WORDS} (\d{{2}})\b(?![.,]?\s*[a-z\d])", _cents, s)
    s = re.sub(r"\b(\d{1,2}) cents?\b", lambda m: f"0.{int(m.group(1)):02d} dollars", s)
    # ranges: 3-5, between 3 and 5, from 3 to 5, 3 through 5 -> 3 to 5
    s = re.sub(r"(\d)\s*(?:[-\u2013\u2014]|\bthrough\b|\bthru\b)\s*(?=[$€£¥]?\d)", r"\1 to ", s)
    s = re.sub(r"\bbetween ([$€£¥]?\d+(?:\.\d+)?) (?:and|to) (?=[$€£¥]?\d)", r"\1 to ", s)
    s = re.sub(r"\bfrom ([$€£¥]?\d+(?:\.\d+)?) to (?=[$€£¥]?\d)", r"\1 to ", s)
    s = re.sub(r"\bper\s+cent\b|%", " percent ", s)
    s = re.sub(rf"\b{_CURRENCY_WORDS}\s*([$€£¥]?\d+(?:[.,]\d+)*)", rf"\1{cur}", s)  # USD 7.95
    s = re.sub(rf"[{_CURRENCY_SYMBOLS}]\s*(\d+(?:[.,]\d+)*)", rf"\1{cur}", s)  # $7.95
    s = re.sub(rf"[{_CURRENCY_SYMBOLS}]", " ", s)
    s = re.sub(rf"(?<=\d)\s*(?:usd\s+)?{_CURRENCY_WORDS}\b", cur, s)  # 7.95 dollars
    s = re.sub(r"(\d)\.(\d*?)0+\b", lambda m: m.group(1) + ("." + m.group(2) if m.group(2) else ""), s)  # 45.00 -> 45
    s = re.sub(r"'", "", s)  # don't -> dont, customer's -> customers
    s = re.sub(r"[^\w\s.]|_", " ", s)
    s = re.sub(r"(?<!\d)\.|\.(?!\d)", " ", s)  # keep only decimal points
    s = re.sub(r"(?<=\d)(?=[a-z])(?!(?:st|nd|rd|th)\b)|(?<=[a-z])(?=\d)", " ", s)  # 250g -> 250 g, eu42 -> eu 42
    out: list[str] = []
    for t in s.split():
        if t in _ARTICLES:
            continue
        if out and out[-1][0].isdigit() and t in _UNIT_AFTER_NUMBER:
            t = _UNIT_AFTER_NUMBER[t]
        t = _UNIT_OF.get(t, t)
        if out and t in _CONVERT and re.fullmatch(r"\d+(?:\.\d+)?", out[-1]):
            unit, factor = _CONVERT[t]
            out[-1], t = _num(float(out[-1]) * factor), unit
            if len(out) >= 3 and out[-2] == "to" and re.fullmatch(r"\d+(?:\.\d+)?", out[-3]):
                out[-3] = _num(float(out[-3]) * factor)  # 3 to 5 weeks -> 21 to 35 days
        out.append(t)
    return " ".join(out)


def _fold(token: str) -> str:
    """Light plural folding for matching: days -> day, boxes -> box, deliveries -> delivery."""
    if len(token) <= 3 or not token.endswith("s") or token.endswith(("ss", "us", "is")):
        return token
    if token.endswith("ies") and len(token) > 4:
        return token[:-3] + "y"
    if token.endswith(("xes", "ches", "shes", "sses", "zzes")):
        return token[:-2]
    return token[:-1]


fold = _fold


def tokens(text: str, fold: bool = True) -> list[str]:
    """Normalised tokens, plural-folded unless `fold=False`: the unit `contains_fact` matches on."""
    words = normalize(text).split()
    return [_fold(t) for t in words] if fold else words


def find(hay: list[str], needle: list[str]) -> list[int]:
    """Start positions of `needle` as a contiguous run of whole tokens in `hay`."""
    n = len(needle)
    if not n:
        return []
    first = needle[0]
    return [i for i in range(len(hay) - n + 1) if hay[i] == first and hay[i:i + n] == needle]


# Link words a fact may word differently ("last Friday of November" / "last Friday in November").
_LINKS = frozenset("of in on at for from by per every each with".split())


def find_fact(hay: list[str], needle: list[str]) -> list[int]:
    """Start positions of a fact in `hay`: as a contiguous run of tokens, else with its link words
    (of, in, on, per, ...) free: its other tokens in order, at most one token between neighbours."""
    exact = find(hay, needle)
    core = [t for t in needle if t not in _LINKS]
    if exact or not core or len(core) == len(needle):
        return exact
    out = []
    for i in (i for i, t in enumerate(hay) if t == core[0]):
        j, ok = i, True
        for t in core[1:]:
            nxt = next((k for k in range(j + 1, min(j + 3, len(hay))) if hay[k] == t), None)
            if nxt is None or any(hay[k] not in _LINKS for k in range(j + 1, nxt)):
                ok = False
                break
            j = nxt
        if ok:
            out.append(i)
    return out


def contains_fact(text: str, fact: str) -> bool:
    """True when `fact` occurs in `text` as a run of whole normalised tokens (link words free).

    A fact that normalises to nothing (e.g. "the") is never contained: it cannot be checked.
    """
    return bool(find_fact(tokens(text), tokens(fact)))


# -- concrete values ---------------------------------------------------------------------------
def is_number(token: str) -> bool:
    return bool(re.fullmatch(r"\d+(?:\.\d+)?(?:st|nd|rd|th)?", token))


# Words after a number that are not its unit ("in 2014 in Lindenfall", "30 or more").
_NOT_UNITS = frozenset(
    "a an the and or to of in on at for by with from is are was were be it its this that as if than so "
    "do does you your we our i me my they their he she his her can will would should may might must have "
    "has had not no yes per up out about into over after before within also just only more less or every each "
    "since until".split())
# Two-word units whose first word alone says too little ("3 business days" vs "3 days").
_UNIT_PREFIXES = frozenset({"business", "calendar", "working", "school", "bank"})


def _same_unit_next(toks: list[str], j: int, unit: str) -> bool:
    """Does a list go on after a value with a unit, the next item carrying the same unit ("$5.95, $7.50
    or $9.95" normalises to "5.95 usd 7.50 usd or 9.95 usd")?"""
    k = j + 1 if j < len(toks) and toks[j] in ("or", "nor", "and") else j
    if k < len(toks) and is_number(toks[k]):
        k += 3 if k + 2 < len(toks) and toks[k + 1] == "to" and is_number(toks[k + 2]) else 1
        return toks[k:k + len(unit.split())] == unit.split()
    return False


class Value(NamedTuple):
    number: str  # normalised: "30", "7.95", "3 to 5", "1st"
    unit: str  # plural-folded unit word(s), "usd" for money, "" when none: "day", "km", "business day"
    group: int  # values listed together ("7, 14, 21 or 30 days") share a group
    disjunct: bool  # the group offers alternatives ("or")
    name: str = ""  # a capitalised word just before the value: "pep" in "PEP 8", "zone" in "Zone 3"


def values(text: str) -> list[Value]:
    """Concrete numbers of a text with their unit, in normalised form.

    A list of numbers ending in one unit ("7, 14, 21 or 30 days") gives every number that unit and
    one group; a range ("3 to 5 days") is one value "3 to 5"; amounts of money get the unit "usd".
    """
    toks = [_fold(t) for t in _normal_form(text, keep_currency=True).split()]
    capitalised = {_fold(w.lower()) for w in re.findall(r"\b[A-Z][A-Za-z]+", text)}
    out: list[Value] = []
    i, group = 0, 0
    while i < len(toks):
        if not is_number(toks[i]):
            i += 1
            continue
        run: list[list[str]] = []  # [number, own unit]
        disjunct = False
        j = i
        while j < len(toks) and is_number(toks[j]):
            num = toks[j]
            j += 1
            if j + 1 < len(toks) and toks[j] == "to" and is_number(toks[j + 1]):
                num, j = f"{num} to {toks[j + 1]}", j + 2
            unit = ""
            if j < len(toks) and toks[j] not in _NOT_UNITS and toks[j].isalpha():
                unit = toks[j]
                j += 1
                if unit in _UNIT_PREFIXES and j < len(toks) and toks[j].isalpha() and toks[j] not in _NOT_UNITS:
                    unit, j = f"{unit} {toks[j]}", j + 1
            run.append([num, unit])
            if j + 1 < len(toks) and toks[j] in ("or", "nor") and is_number(toks[j + 1]):
                disjunct, j = True, j + 1
            elif j + 1 < len(toks) and toks[j] == "and" and not unit and is_number(toks[j + 1]):
                j += 1
            elif unit and not _same_unit_next(toks, j, unit):
                break
        last = next((u for _, u in reversed(run) if u), "")
        name = toks[i - 1] if i > 0 and toks[i - 1] in capitalised else ""
        out += [Value(n, u or last, group, disjunct, name) for n, u in run]
        group += 1
        i = max(j, i + 1)
    return out


# -- sentences ---------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _segmenter():
    import pysbd

    return pysbd.Segmenter(language="en", clean=False)


# The chunker's splitter: a sentence ends at . ! or ? followed by space and something that starts a
# sentence. pysbd knows "e.g." and "$7.95" but is ~1,600x slower (measured on ecostride's documents:
# 1.4 s against 0.9 ms), which a multi-megabyte document would feel at every index build, and
# chunk boundaries (so the index, its fingerprint and the retrieval figures) would all move.
SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[\"'(\[]?[A-Z0-9$€£])")


def quick_sentences(text: str) -> list[str]:
    """Sentences of one paragraph by SENTENCE_END: for chunking, where speed matters more than "e.g."."""
    return [s for s in SENTENCE_END.split(text) if s.strip()]


@lru_cache(maxsize=32768)
def sentences(text: str) -> tuple[str, ...]:
    """Sentences of prose (pysbd), line by line so list items and headings stay apart."""
    out: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if line:
            out += [s.strip() for s in _segmenter().segment(line) if s.strip()]
    return tuple(out)


# -- stop words ----------------------------------------------------------------------------------
# The scorer's function words: left out of an answer's content words. Short on purpose: a longer
# list (scikit-learn's has "fire", "bill", "system") would hide words a wrong answer rests on.
STOPWORDS = frozenset(
    "a an the and or of to in on at for by with from is are was were be been it its this that these "
    "those as if then than so do does did you your we our us i me my they their them he she his her "
    "can could will would should may might must have has had not no yes there here what which who "
    "when where how why all any each per up out about into over after before within also just only "
    "please".split())
# Question-frame words that say nothing about what is asked, on top of scikit-learn's list.
QUESTION_WORDS = {"do", "does", "did", "can", "could", "would", "will", "shall", "may", "might", "must",
                  "tell", "know", "offer", "provide", "sell", "buy", "get", "got", "need", "want", "make",
                  "use", "way", "ok", "okay", "please", "possible", "available", "there", "ever", "also",
                  "you", "your", "yours", "i", "me", "my", "we", "us", "our", "ours", "they", "them"}
COMMON_DOC_SHARE = 0.5  # words in at least this share of documents are not distinctive


@lru_cache(maxsize=1)
def question_stopwords() -> frozenset[str]:
    """English stop words (scikit-learn's) plus question-frame words, in `tokens` form: what is
    left of a question is what it asks about (corpus checks, importers, question generation)."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS  # heavy: only the checks need it

    return frozenset(t for w in ENGLISH_STOP_WORDS | QUESTION_WORDS for t in tokens(w))


def common_terms(doc_terms: Iterable[set[str]], share: float = COMMON_DOC_SHARE) -> set[str]:
    """Words in at least `share` of the documents (none when there are two documents or fewer)."""
    doc_terms = list(doc_terms)
    df = Counter(t for terms in doc_terms for t in terms)
    return {t for t, n in df.items() if len(doc_terms) > 2 and n >= share * len(doc_terms)}


def key_terms(question: str, common: set[str] = frozenset()) -> set[str]:
    """Distinctive content words of a question: not stop words, not common across the corpus."""
    stop = question_stopwords()
    return {t for t in tokens(question) if (len(t) > 1 or t.isdigit()) and t not in stop and t not in common}


def markdown_sentences(text: str) -> list[str]:
    """Sentences of a Markdown document (`sentences`), headings, list markers and table rules stripped."""
    out = []
    for line in text.splitlines():
        line = re.sub(r"^\s*(?:#+|[-*+]|\d+\.)\s+", "", line).strip()
        if not line or line.startswith("|---"):
            continue
        out += [s for s in sentences(line) if len(s) > 2]
    return out
