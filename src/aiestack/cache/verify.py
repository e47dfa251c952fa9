"""Verification of a semantic candidate: is the cached question really the same question?

Embeddings place a question and its opposite close together: "Is aspirin safe during pregnancy?"
and "Is aspirin not safe during pregnancy?" score about 0.95 with MiniLM, and GPTCache's default
serves one's answer to the other (GPTCache issue #694). So a candidate above the similarity
threshold must also pass cheap lexical checks before it is served. Each check compares what a
paraphrase keeps and a near miss changes:

- **negation**: a negation cue (not, no, never, n't, without, unable, ...) on one side only;
- **numbers**: the multiset of numbers, digits and number words alike (two = 2, first = 1);
- **entities**: names, products, codes (capitalised inside a sentence, acronyms, letter-digit
  mixes like ``A100`` or ``gpt-4``) on one side missing from the other, or the same ones in
  another order where the order is a direction (``from Paris to London``);
- **units and dates**: units, currencies, weekdays, months and relative days must agree;
- **antonyms**: a word on one side whose opposite is on the other (buy/sell, before/after, ...);
- **lookalikes**: a word swapped for one spelled alike (Austria/Australia, Iran/Iraq, Gemma/Gemini,
  Jon/John), in any case and at any similarity: embeddings place such names closest of all, and
  lower-case or sentence-initial names escape the entity check. Spelling variants (colour/color,
  organise/organize) and inflections are not lookalikes; a typo is (the cache then misses, the safe
  side). Country names count as names in lower case too, so a name inside another (Niger/Nigeria)
  is caught, and so is one country swapped for another anywhere in the sentence (sweden/swaziland);
- **substitutions**: a content word swapped for another (``router`` → ``modem``) needs a higher
  similarity than the threshold: ``substitution_margin`` above it.

A :class:`Verifier` returns ``None`` when the candidate may be served, else the reason (a short
label, recorded on the exchange and counted). A model-based verifier (a cross-encoder or an LLM
judge) can implement the same protocol.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from difflib import SequenceMatcher
from functools import lru_cache
from typing import Protocol


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_WORD = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-'’][A-Za-z0-9]+)*|\d+(?:[.,:]\d+)*")

NEGATIONS = _words(
    "not no never none nobody nothing nowhere neither nor without cannot cant can't won't wont "
    "don't dont doesn't doesnt didn't didnt isn't isnt aren't arent wasn't wasnt weren't werent "
    "shouldn't shouldnt wouldn't wouldnt couldn't couldnt mustn't haven't hasn't hadn't "
    "unable fail fails failed failing lack lacks impossible prevent stop avoid"
)

_NUMBER_WORDS = {
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12",
    "thirteen": "13", "fourteen": "14", "fifteen": "15", "sixteen": "16", "seventeen": "17",
    "eighteen": "18", "nineteen": "19", "twenty": "20", "thirty": "30", "forty": "40",
    "fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80", "ninety": "90",
    "hundred": "100", "thousand": "1000", "million": "1000000", "billion": "1000000000",
    "first": "1", "second": "2", "third": "3", "fourth": "4", "fifth": "5", "sixth": "6",
    "seventh": "7", "eighth": "8", "ninth": "9", "tenth": "10", "once": "1", "twice": "2",
    "half": "0.5", "dozen": "12", "double": "2", "triple": "3",
}  # fmt: skip

#: Canonical names of units, currencies and calendar words: both sides must name the same ones.
_UNITS = {
    "km": "km", "kilometer": "km", "kilometers": "km", "kilometre": "km", "kilometres": "km",
    "mile": "mile", "miles": "mile", "mi": "mile", "meter": "m", "meters": "m", "metre": "m",
    "metres": "m", "foot": "ft", "feet": "ft", "ft": "ft", "inch": "in", "inches": "in",
    "cm": "cm", "centimeters": "cm", "mm": "mm", "kg": "kg", "kilogram": "kg", "kilograms": "kg",
    "kilo": "kg", "kilos": "kg", "pound": "lb", "pounds": "lb", "lb": "lb", "lbs": "lb",
    "gram": "g", "grams": "g", "g": "g", "ounce": "oz", "ounces": "oz", "oz": "oz",
    "liter": "l", "liters": "l", "litre": "l", "litres": "l", "gallon": "gal", "gallons": "gal",
    "celsius": "c", "centigrade": "c", "fahrenheit": "f", "kelvin": "k",
    "seconds": "s", "minute": "min", "minutes": "min", "hour": "h", "hours": "h",
    "day": "day", "days": "day", "week": "week", "weeks": "week", "month": "month",
    "months": "month", "year": "year", "years": "year", "daily": "day", "weekly": "week",
    "monthly": "month", "yearly": "year", "annually": "year", "annual": "year",
    "gb": "gb", "gigabyte": "gb", "gigabytes": "gb", "mb": "mb", "megabyte": "mb",
    "megabytes": "mb", "tb": "tb", "terabyte": "tb", "kb": "kb",
    "dollar": "usd", "dollars": "usd", "usd": "usd", "euro": "eur", "euros": "eur", "eur": "eur",
    "yen": "jpy", "jpy": "jpy", "gbp": "gbp", "sterling": "gbp", "rupee": "inr", "rupees": "inr",
    "today": "today", "tonight": "today", "tomorrow": "tomorrow", "yesterday": "yesterday",
    "morning": "morning", "afternoon": "afternoon", "evening": "evening", "night": "night",
    "monday": "mon", "tuesday": "tue", "wednesday": "wed", "thursday": "thu", "friday": "fri",
    "saturday": "sat", "sunday": "sun", "weekend": "weekend", "weekday": "weekday",
    "weekdays": "weekday", "january": "jan", "february": "feb", "march": "mar", "april": "apr",
    "may": "may", "june": "jun", "july": "jul", "august": "aug", "september": "sep",
    "october": "oct", "november": "nov", "december": "dec", "spring": "spring",
    "summer": "summer", "autumn": "autumn", "winter": "winter",
}  # fmt: skip

_ANTONYM_PAIRS = (
    "buy sell", "increase decrease", "increase reduce", "raise lower", "before after",
    "min max", "minimum maximum", "cheapest expensive", "cheap expensive", "hot cold",
    "open close", "start stop", "start end", "begin end", "import export", "upload download",
    "enable disable", "add remove", "add delete", "include exclude", "allow block",
    "allow deny", "accept reject", "win lose", "won lost", "best worst", "fast slow",
    "faster slower", "fastest slowest", "high low", "higher lower", "highest lowest",
    "more less", "most least", "more fewer", "long short", "longer shorter", "longest shortest",
    "large small", "larger smaller", "largest smallest", "big small", "bigger smaller",
    "biggest smallest", "heavy light", "heavier lighter", "early late", "earlier later",
    "earliest latest", "first last", "old new", "older newer", "oldest newest", "young old",
    "younger older", "push pull", "send receive", "encrypt decrypt", "compress decompress",
    "install uninstall", "connect disconnect", "lock unlock", "mount unmount", "subscribe unsubscribe",
    "inside outside", "above below", "over under", "up down", "left right", "north south",
    "east west", "male female", "men women", "boy girl", "true false", "safe dangerous",
    "legal illegal", "healthy unhealthy", "positive negative", "gain lose", "profit loss",
    "borrow lend", "arrive depart", "arrival departure", "inbound outbound", "input output",
    "encode decode", "serialize deserialize", "read write", "get set", "join leave",
    "love hate", "like dislike", "agree disagree", "pass fail", "succeed fail", "rise fall",
    "hire fire", "deposit withdraw", "credit debit", "income expense", "asleep awake",
    "wet dry", "light dark", "warm cool", "warmer cooler", "easy hard", "easier harder",
    "simple complex", "public private", "online offline", "visible hidden", "show hide",
    "wake sleep", "mac windows", "ios android", "red blue", "white black", "cats dogs",
    "cat dog", "tea coffee", "good bad", "better worse", "pros cons", "breakfast dinner", "lunch dinner", "beginner advanced",
)  # fmt: skip

_STOP = _words(
    "a an the is are was were be been being am do does did doing have has had having i me my mine "
    "myself you your yours we our us they them their it its this that these those there here what "
    "which who whom whose when where why how can could would should will shall may might must to of "
    "in on at for with by from as about into onto out off over under again further then once so "
    "than too very just also any some all each every both few other such only own same and or but "
    "if while because until whether please tell explain know want need let get give show help "
    "does anyone someone something way ways thing things much many really actually possible "
    "best good kind sort type like mean means meaning exactly correct right proper properly "
    "question quick quickly simple easy easily go going use using used make making made there's "
    "what's how's it's i'm i've i'd you're that's who's where's when's why's"
)

_NEGATING_PREFIXES = ("un", "dis", "in", "im", "il", "ir", "non", "non-", "anti", "de", "mis")

_SYMMETRIC = frozenset({"and", "between", "or", "&", "versus", "vs", "compare", "compared", "difference"})
_DIRECTIONAL = frozenset({"from", "to", "into", "than", "over", "against", "onto", "toward", "towards"})


def _antonyms() -> dict[str, frozenset[str]]:
    table: dict[str, set[str]] = {}
    for pair in _ANTONYM_PAIRS:
        a, b = pair.split()
        table.setdefault(a, set()).add(b)
        table.setdefault(b, set()).add(a)
    return {k: frozenset(v) for k, v in table.items()}


def _stem(word: str) -> str:
    """A light stemmer: enough to see that "routers" and "router" are one word."""
    w = word.lower().replace("’", "'").replace("-", "")
    if w.endswith("'s"):
        w = w[:-2]
    for suffix, keep in (("ies", "y"), ("sses", "ss"), ("ing", ""), ("ed", ""), ("es", ""), ("s", "")):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3 and not w.endswith("ss"):
            return w[: -len(suffix)] + keep
    return w


@dataclass(frozen=True, slots=True)
class _Parsed:
    words: tuple[str, ...]  # lower case, in order
    negated: bool
    numbers: tuple[str, ...]  # sorted
    units: frozenset[str]
    entities: tuple[str, ...]  # lower case, in order of appearance
    stems: frozenset[str]  # content words, stemmed
    roles: dict[str, str]  # entity or unit -> the directional word right before it
    positions: dict[str, int]  # entity or unit -> index of its first word
    symmetric: bool


class Verifier(Protocol):
    def __call__(self, query: str, candidate: str, *, similarity: float, threshold: float) -> str | None:
        """``None`` if ``candidate``'s answer may be served for ``query``, else the reason it may not."""
        ...


#: Texts whose :func:`parse` a verifier remembers (each ~1-2 KB).
PARSED_REMEMBERED = 2048


class LexicalVerifier:
    """The cheap checks described in the module docstring; microseconds per pair, no model.

    A text's :func:`parse` (~30 µs for a short question) is remembered (:data:`PARSED_REMEMBERED`):
    a lookup verifies one question against up to a handful of candidates, and a cached question is a
    candidate again and again."""

    def __init__(self, *, substitution_margin: float = 0.06, antonyms: Iterable[str] = ()) -> None:
        self.substitution_margin = substitution_margin
        table = _antonyms()
        for pair in antonyms:
            a, b = pair.split()
            table[a] = table.get(a, frozenset()) | {b}
            table[b] = table.get(b, frozenset()) | {a}
        self._antonyms = table
        self._parse = lru_cache(maxsize=PARSED_REMEMBERED)(parse)

    def __call__(self, query: str, candidate: str, *, similarity: float, threshold: float) -> str | None:
        a, b = self._parse(query), self._parse(candidate)
        if a.negated != b.negated:
            return "negation"
        if a.numbers != b.numbers:
            return "number"
        if a.units != b.units:
            return "unit"
        reason = self._entities(a, b)
        if reason is not None:
            return reason
        if self._opposed(a, b):
            return "antonym"
        if _lookalike(a, b):
            return "lookalike"
        if _country_swapped(a, b):
            return "entity"  # one country for another, in lower case or first in the sentence
        only_a, only_b = a.stems - b.stems, b.stems - a.stems
        if only_a and only_b and similarity < threshold + self.substitution_margin:
            return "substitution"
        return None

    def _entities(self, a: _Parsed, b: _Parsed) -> str | None:
        words_a = {_stem(w) for w in a.words}
        words_b = {_stem(w) for w in b.words}
        if any(e not in words_b for e in a.entities) or any(e not in words_a for e in b.entities):
            return "entity"
        return "direction" if _swapped(a, b) else None

    def _opposed(self, a: _Parsed, b: _Parsed) -> bool:
        set_a, set_b = set(a.words), set(b.words)
        only_a, only_b = set_a - set_b, set_b - set_a
        for word in only_a:
            opposite = self._antonyms.get(word)
            if opposite and (opposite & set_b) and not (opposite & set_a):
                return True
        # available / unavailable, advantages / disadvantages, connect / disconnect...
        for one, other in ((only_a, only_b), (only_b, only_a)):
            for word in one:
                for prefix in _NEGATING_PREFIXES:
                    if word.startswith(prefix) and word[len(prefix) :] in other:
                        return True
        return False


def parse(text: str) -> _Parsed:
    tokens = _WORD.findall(text)
    words = tuple(t.lower().replace("’", "'") for t in tokens)
    negated = any(w in NEGATIONS or w.endswith("n't") for w in words)
    numbers = sorted(
        _NUMBER_WORDS.get(w, w.replace(",", "")) for w in words if w[0].isdigit() or w in _NUMBER_WORDS
    )
    modal = _modal_may(words)
    units = frozenset(_UNITS[w] for w in words if w in _UNITS and not (w == "may" and modal))
    entities: list[str] = []
    positions: dict[str, int] = {}
    roles: dict[str, str] = {}
    for i, token in enumerate(tokens):
        unit = words[i] in _UNITS and not (words[i] == "may" and modal)
        if unit or _is_entity(token, i, tokens):
            name = _UNITS[words[i]] if unit else _stem(token)
            if not unit:
                entities.append(name)
            positions.setdefault(name, i)
            if i > 0 and words[i - 1] in _DIRECTIONAL:
                roles.setdefault(name, words[i - 1])
    stems = frozenset(
        _stem(w) for w in words if w not in _STOP and w not in NEGATIONS and not w[0].isdigit() and len(w) > 1
    )
    return _Parsed(
        words=words,
        negated=negated,
        numbers=tuple(numbers),
        units=units,
        entities=tuple(entities),
        stems=stems,
        roles=roles,
        positions=positions,
        symmetric=any(w in _SYMMETRIC for w in words),
    )


def _swapped(a: _Parsed, b: _Parsed) -> bool:
    """Whether the same names play other parts: a direction word moved, or a reversed "X verb Y"."""
    shared = set(a.positions) & set(b.positions)
    for name in shared:
        role_a, role_b = a.roles.get(name), b.roles.get(name)
        if role_a is not None and role_b is not None and role_a != role_b:
            return True  # "from X" here, "to X" there
        others = [other for other in shared if other != name]
        if role_a is not None and role_b is None and any(b.roles.get(o) == role_a for o in others):
            return True  # the role moved to another name: "faster than Java" / "faster than Python"
        if role_b is not None and role_a is None and any(a.roles.get(o) == role_b for o in others):
            return True
    if a.symmetric or b.symmetric:
        return False
    ordered = sorted(shared, key=lambda n: a.positions[n])
    for first, second in itertools.pairwise(ordered):
        if b.positions[first] > b.positions[second]:
            between_a = a.words[a.positions[first] + 1 : a.positions[second]]
            between_b = b.words[b.positions[second] + 1 : b.positions[first]]
            if between_a == between_b:
                return True  # "Apple acquire Beats" / "Beats acquire Apple"
    return False


#: Countries (one word), recognised as names in lower case too: "niger" and "nigeria" are two places.
_COUNTRIES = _words(
    "afghanistan albania algeria andorra angola argentina armenia australia austria azerbaijan bahamas "
    "bahrain bangladesh barbados belarus belgium belize benin bhutan bolivia botswana brazil brunei "
    "bulgaria burundi cambodia cameroon canada chad chile china colombia comoros congo croatia cuba "
    "cyprus czechia denmark djibouti dominica ecuador egypt eritrea estonia eswatini ethiopia fiji "
    "finland france gabon gambia georgia germany ghana greece grenada guatemala guinea guyana haiti "
    "honduras hungary iceland india indonesia iran iraq ireland israel italy jamaica japan jordan "
    "kazakhstan kenya kiribati kosovo kuwait kyrgyzstan laos latvia lebanon lesotho liberia libya "
    "liechtenstein lithuania luxembourg madagascar malawi malaysia maldives mali malta mauritania "
    "mauritius mexico micronesia moldova monaco mongolia montenegro morocco mozambique myanmar namibia "
    "nauru nepal netherlands nicaragua niger nigeria norway oman pakistan palau palestine panama "
    "paraguay peru philippines poland portugal qatar romania russia rwanda samoa senegal serbia "
    "seychelles singapore slovakia slovenia somalia spain sudan suriname sweden switzerland syria "
    "taiwan tajikistan tanzania thailand togo tonga tunisia turkey turkmenistan tuvalu uganda ukraine "
    "uruguay uzbekistan vanuatu venezuela vietnam yemen zambia zimbabwe swaziland burma"
)
_COUNTRY_STEMS = frozenset(_stem(c) for c in _COUNTRIES)
#: British → American endings, so that spelling variants compare equal.
_VARIANTS = (("our", "or"), ("ise", "ize"), ("isation", "ization"), ("yse", "yze"), ("tre", "ter"), ("ogue", "og"))


def _spelling(word: str) -> str:
    for british, american in _VARIANTS:
        if word.endswith(british):
            return word[: -len(british)] + american
    return word


def _country_swapped(a: _Parsed, b: _Parsed) -> bool:
    countries_a = {_stem(w) for w in a.words} & _COUNTRY_STEMS
    countries_b = {_stem(w) for w in b.words} & _COUNTRY_STEMS
    return bool(countries_a - countries_b and countries_b - countries_a)


def _lookalike(a: _Parsed, b: _Parsed) -> bool:
    """Whether a word only in ``a`` and a word only in ``b`` are two names spelled alike (see the module docstring)."""
    only_a = {_spelling(_stem(w)) for w in a.words if len(w) >= 3 and not w[0].isdigit()}
    only_b = {_spelling(_stem(w)) for w in b.words if len(w) >= 3 and not w[0].isdigit()}
    only_a, only_b = only_a - only_b, only_b - only_a
    for x in only_a:
        for y in only_b:
            if x.startswith(y) or y.startswith(x):
                if x in _COUNTRIES and y in _COUNTRIES:
                    return True  # Niger / Nigeria; other prefixes are derivations (cancel / cancellation)
                continue
            if x[0] == y[0] and (SequenceMatcher(None, x, y).ratio() >= 0.6 or _shared_start(x, y) >= 0.6):
                return True
    return False


def _shared_start(x: str, y: str) -> float:
    """The common prefix's share of the shorter word (gemma / gemini: 0.6)."""
    n = 0
    for cx, cy in zip(x, y, strict=False):
        if cx != cy:
            break
        n += 1
    return n / min(len(x), len(y)) if n >= 3 else 0.0


def _modal_may(words: tuple[str, ...]) -> bool:
    """ "may" as a verb ("may I", "it may rain") rather than the month."""
    for i, w in enumerate(words):
        if w == "may" and (
            i == 0 or words[i - 1] not in {"in", "of", "early", "late", "mid", "since", "until", "by"}
        ):
            return True
    return False


def _is_entity(token: str, i: int, tokens: list[str]) -> bool:
    if token[0].isdigit():
        return False  # numbers have their own check
    if any(c.isdigit() for c in token):
        return True  # A100, gpt-4, ipv6, s3
    if len(token) > 1 and token.isupper():
        return token.lower() not in _UNITS and token.lower() not in {"i", "ok"}
    if any(c.isupper() for c in token[1:]):
        return True  # iPhone, PostgreSQL, macOS
    # capitalised inside the sentence
    return token[0].isupper() and i > 0 and token.lower() not in _STOP and token.lower() not in _UNITS


def same_question(query: str, candidate: str) -> bool:
    """Whether the lexical checks alone (no similarity margin) find no difference."""
    return LexicalVerifier(substitution_margin=0.0)(query, candidate, similarity=1.0, threshold=0.0) is None
