"""PII: detection of personal data, and reversible redaction with numbered placeholders.

Supported, with validation beyond the pattern so that look-alikes are not redacted:

- ``EMAIL_ADDRESS``; ``PHONE_NUMBER`` (the ``phonenumbers`` library: numbers valid for their region,
  international or in ``default_region``; and, next to a phone cue such as "Phone:", "call me at",
  "mobile", "fax", national numbers of other countries that have a phone's length and shape); ``CREDIT_CARD`` (known issuer prefixes and the Luhn check);
  ``IBAN_CODE`` (country length and the ISO 7064 mod-97 check); ``US_SSN`` (area not 000, 666 or 9xx,
  group not 00, serial not 0000); ``IP_ADDRESS`` (IPv4 and IPv6, parsed by :mod:`ipaddress`).
- ``PERSON`` and ``LOCATION`` by light rules only (an honorific or "my name is" before capitalised
  words; a numbered street address): precise, but they miss most names. Use a NER model for more.

:class:`Vault` replaces each value by a placeholder such as ``<EMAIL_1>`` (the same value always gets
the same placeholder within an exchange) and restores the placeholders in the model's answer.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import phonenumbers

from aiestack.guardrails.base import holds_one, without_overlaps
from aiestack.types import Finding

#: Entity type → placeholder stem.
PLACEHOLDER_STEMS: Mapping[str, str] = {
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE_NUMBER": "PHONE",
    "CREDIT_CARD": "CARD",
    "IBAN_CODE": "IBAN",
    "US_SSN": "SSN",
    "IP_ADDRESS": "IP",
    "PERSON": "PERSON",
    "LOCATION": "LOCATION",
}
ENTITIES: tuple[str, ...] = tuple(PLACEHOLDER_STEMS)

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,24}\b")
_CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d])")
_CARD_PREFIX = re.compile(r"^(?:4|5[1-5]|2[2-7]|3[47]|3(?:0[0-5]|[68])|6(?:011|5|4[4-9]|22)|35)")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
_SSN = re.compile(r"(?<![\d-])(\d{3})([- ]?)(\d{2})\2(\d{4})(?![\d-])")
_SSN_CONTEXT = re.compile(r"\b(?:ssn|social security|sozialversicherung)", re.IGNORECASE)
_IPV4 = re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\d.]*\d)")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{1,4}:){1,7}(?::|(?::[0-9A-Fa-f]{1,4}){1,7}|[0-9A-Fa-f]{1,4})(?![\w:])")
_DIGITS = re.compile(r"\d")
_PHONE = re.compile(
    r"(?<![\w+@.-])(?:\+|00)?\(?\d{1,4}\)?(?:[ .\-\u00a0]?\(?\d{1,5}\)?){1,6}(?:\s*(?:x|ext\.?|extension)\s*\d{1,6})?(?![\w@-]|\.\d)"
)
#: Words that say the number next to them is a phone number (before it, within a few words, or just after).
_PHONE_CUE_BEFORE = re.compile(
    r"(?:\b(?:phone|tel|telephone|mobile|cell|cellphone|handy|fax|desk|office|whatsapp|sms|telefon|téléphone|portable)\b"
    r"|\b(?:phone|contact|mobile|cell|telephone|fax)\s+(?:number|no\.?|nr\.?|#)"
    r"|\b(?:call|ring|text|reach|dial|phone|message|messages|messaging|contact)\s+(?:me|us|him|her|them|you)?\s*(?:at|on|to|via)?"
    r"|\b(?:answering|calling|texting)\s+(?:at|on))[\s:.#-]*(?:\(?\w{0,12}\)?[\s:.-]*)?$",
    re.IGNORECASE,
)
_PHONE_CUE_AFTER = re.compile(r"^[\s,;(-]*(?:office|fax|mobile|cell|home|work|desk|phone|tel)\b", re.IGNORECASE)
_DATE_LIKE = re.compile(r"^(?:\d{4}[.-]\d{1,2}[.-]\d{1,2}|\d{1,2}[.-]\d{1,2}[.-]\d{4}|\d{1,2}:\d{2})")
#: A capitalised name word in any Latin script (``Grusová``, ``Ström``, ``O'Neil``) or an initial (``D.``).
_NAME_WORD = r"(?:[A-ZÀ-ÖØ-ÞĀ-Ž][a-zß-öø-ÿā-žA-ZÀ-ÖØ-ÞĀ-Ž'’-]*[a-zß-öø-ÿā-ž]|[A-Z]\.)"
_PERSON = re.compile(
    r"\b(?:(?:Mr|Mrs|Ms|Mx|Dr|Prof|Miss|Sir|Madam|Herr|Frau)\.?[ \t]+"
    r"|(?:[Mm]y name is|[Mm]y name's|[Ii]ch heiße|[Ii]ch hei(?:ss|ß)e|[Nn]ame:|(?:Dear|Hi|Hello|Hey)(?=[ \t]+[A-Z])(?![ \t]+(?:Sir|Sirs|Madam|Customer|Team|All|Everyone|Colleagues?|Friends?|Valued|Hiring|Support|There)\b)"
    r"|(?:[Ee]veryone|[Tt]hey|[Pp]eople|[Ff]riends)[ \t]+calls?[ \t]+me)[ \t]+"
    r"|(?:[Rr]egards|[Ss]incerely|Best|Thanks|Cheers),?[ \t]*\n[ \t]*)"
    rf"({_NAME_WORD}(?:[ \t]+{_NAME_WORD}){{0,2}})"
)
#: Substrings of which a match of :data:`_PERSON` holds one (the pattern is case-sensitive, so these are
#: exact): each honorific (``Mrs`` holds ``Mr``; ``Hello``, ``Hey`` and ``Herr`` hold ``He``), ``y name``
#: ("my name is/'s"), ``ch hei`` ("ich heiße/heisse"), ``ame:`` ("Name:"), ``Dear``, ``Hi``, ``call``
#: ("everyone calls me"), and the line break after a closing ("Regards,\n"). A text without any is not
#: scanned (the pattern's alternatives cost ~700 instructions a character).
_PERSON_NEEDS = ("Mr", "Ms", "Mx", "Dr", "Prof", "Miss", "Sir", "Madam", "He", "Frau", "y name", "ch hei", "ame:", "Dear", "Hi", "call", "\n")
_STREET = re.compile(
    r"\b\d{1,6}\s+(?:[A-Z][A-Za-z'’.-]*\s+){1,4}"
    r"(?:Street|St\.?|Avenue|Ave\.?|Road|Rd\.?|Boulevard|Blvd\.?|Lane|Ln\.?|Drive|Dr\.?|Court|Ct\.?"
    r"|Way|Place|Pl\.?|Terrace|Square|Sq\.?|Parkway|Highway|Hwy\.?|Circle|Cir\.?)"
    r"(?:,?\s+(?:Apt\.?|Suite|Unit|#)\s*\w+)?\b"
)
#: Substrings of which a match of :data:`_STREET` holds one: its street types (``Street`` holds ``St``,
#: ``Drive`` ``Dr``, ``Place`` ``Pl``, ``Square`` ``Sq``, ``Circle`` ``Cir``, ``Avenue`` ``Ave``).
_STREET_NEEDS = ("St", "Ave", "Road", "Rd", "Boulevard", "Blvd", "Lane", "Ln", "Dr", "Court", "Ct", "Way", "Pl", "Terrace", "Sq",
                 "Parkway", "Highway", "Hwy", "Cir")
#: IBAN length per country (ISO 13616), for the countries most seen; others need 15-34 characters.
_IBAN_LENGTHS: Mapping[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "ES": 24, "FI": 18,
    "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28,
    "IE": 22, "IL": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LI": 21, "LT": 20,
    "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18,
    "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SE": 24,
    "SI": 19, "SK": 24, "SM": 27, "TN": 24, "TR": 26, "UA": 29, "VG": 24, "XK": 20,
}


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_ok(compact: str) -> bool:
    """The country length (where known) and the mod-97 check of a compact, upper-case IBAN."""
    expected = _IBAN_LENGTHS.get(compact[:2])
    if expected is not None and len(compact) != expected:
        return False
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    try:
        number = int("".join(str(int(c, 36)) for c in rearranged))
    except ValueError:
        return False
    return number % 97 == 1


def ssn_ok(area: str, group: str, serial: str) -> bool:
    a = int(area)
    return a != 0 and a != 666 and a < 900 and group != "00" and serial != "0000"


def _finding(kind: str, start: int, end: int, score: float) -> Finding:
    return Finding(kind=kind, start=start, end=end, score=score, label=kind)


class PIIDetector:
    """Finds the PII entities in ``entities`` (default: all of :data:`ENTITIES`)."""

    name = "pii"

    def __init__(self, entities: Iterable[str] = ENTITIES, *, default_region: str = "US") -> None:
        unknown = set(entities) - set(ENTITIES)
        if unknown:
            raise ValueError(f"unknown PII entities {sorted(unknown)}; known: {', '.join(ENTITIES)}")
        self.entities = frozenset(entities)
        self.default_region = default_region

    def detect(self, text: str) -> list[Finding]:
        found: list[Finding] = []
        want = self.entities
        if "EMAIL_ADDRESS" in want and "@" in text:
            found += [_finding("EMAIL_ADDRESS", m.start(), m.end(), 1.0) for m in _EMAIL.finditer(text)]
        counted = not want.isdisjoint(("CREDIT_CARD", "PHONE_NUMBER", "US_SSN", "IP_ADDRESS", "LOCATION"))
        digits = len(_DIGITS.findall(text)) if counted else 0
        if "IP_ADDRESS" in want:
            found += self._ips(text, digits)
        if "CREDIT_CARD" in want and digits >= 13:
            found += self._cards(text)
        if "IBAN_CODE" in want:
            found += self._ibans(text)
        if "US_SSN" in want and digits >= 9:
            found += self._ssns(text)
        if "PHONE_NUMBER" in want and digits >= 7:
            found += self._phones(text, without_overlaps(found))
        if "PERSON" in want and holds_one(text, _PERSON_NEEDS):
            found += [_finding("PERSON", m.start(1), m.end(1), 0.6) for m in _PERSON.finditer(text)]
        if "LOCATION" in want and digits and holds_one(text, _STREET_NEEDS):  # a street address has a number
            found += [_finding("LOCATION", m.start(), m.end(), 0.6) for m in _STREET.finditer(text)]
        return without_overlaps(found)

    def _ips(self, text: str, digits: int) -> list[Finding]:
        """IPv4 (three dots and at least four digits; ``digits`` counts the text's) and IPv6 addresses."""
        out = []
        if digits >= 4 and text.count(".") >= 3:
            out += [_finding("IP_ADDRESS", m.start(), m.end(), 0.95) for m in _IPV4.finditer(text)]
        if "::" in text or text.count(":") >= 5:
            for m in _IPV6.finditer(text):
                try:
                    ipaddress.IPv6Address(m.group())
                except ValueError:
                    continue
                out.append(_finding("IP_ADDRESS", m.start(), m.end(), 0.95))
        return out

    def _cards(self, text: str) -> list[Finding]:
        out = []
        for m in _CARD.finditer(text):
            digits = re.sub(r"[ -]", "", m.group())
            if 13 <= len(digits) <= 19 and _CARD_PREFIX.match(digits) and luhn_ok(digits):
                out.append(_finding("CREDIT_CARD", m.start(), m.end(), 1.0))
        return out

    def _ibans(self, text: str) -> list[Finding]:
        out = []
        for m in _IBAN.finditer(text):
            raw = m.group()
            compact = raw.replace(" ", "")
            # the pattern is greedy: try the longest prefix that validates
            for length in range(min(len(compact), 34), 14, -1):
                if iban_ok(compact[:length]):
                    end = m.start() + _raw_length(raw, length)
                    out.append(_finding("IBAN_CODE", m.start(), end, 1.0))
                    break
        return out

    def _ssns(self, text: str) -> list[Finding]:
        out = []
        for m in _SSN.finditer(text):
            if not ssn_ok(m.group(1), m.group(3), m.group(4)):
                continue
            if m.group(2) == "":  # nine bare digits: only with a word that says so nearby
                window = text[max(0, m.start() - 40) : m.start()]
                if not _SSN_CONTEXT.search(window):
                    continue
            out.append(_finding("US_SSN", m.start(), m.end(), 0.9))
        return out

    def _phones(self, text: str, taken: Sequence[Finding]) -> list[Finding]:
        """Phone-shaped candidates, each parsed by ``phonenumbers`` and kept when it is a valid number.

        (``phonenumbers.PhoneNumberMatcher`` does the same search but costs ~20 ms on 2 KB of text.)
        """
        out = []
        for m in _PHONE.finditer(text):
            candidate, end = m.group(), m.end()
            if candidate.endswith(")") and candidate.count(")") > candidate.count("("):
                candidate, end = candidate[:-1], end - 1  # the closing parenthesis of the sentence
            digits = sum(c.isdigit() for c in candidate)
            if digits < 7 or digits > 15:
                continue
            here = Finding(kind="PHONE_NUMBER", start=m.start(), end=end)
            if _overlaps(here, taken):  # a card, IBAN or IP address already claimed these digits
                continue
            try:
                number = phonenumbers.parse(candidate, self.default_region)
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_valid_number(number):
                out.append(_finding("PHONE_NUMBER", m.start(), end, 0.9))
            elif self._phone_cued(text, m.start(), end, candidate):
                out.append(_finding("PHONE_NUMBER", m.start(), end, 0.7))
        return out

    @staticmethod
    def _phone_cued(text: str, start: int, end: int, candidate: str) -> bool:
        """A number of a phone's length, not shaped like a date, with a phone cue next to it.

        National numbers of other countries than ``default_region`` (``0490 75 40 81``, ``(37) 788-063``)
        are not valid for the default region; the words around them tell that they are phone numbers.
        """
        if _DATE_LIKE.match(candidate) or sum(c.isdigit() for c in candidate) < 7:
            return False
        before = text[max(0, start - 40) : start]
        return bool(_PHONE_CUE_BEFORE.search(before) or _PHONE_CUE_AFTER.match(text[end : end + 12]))


def _raw_length(raw: str, compact_length: int) -> int:
    """How many characters of ``raw`` (with spaces) hold its first ``compact_length`` non-spaces."""
    seen = 0
    for i, ch in enumerate(raw):
        if ch != " ":
            seen += 1
            if seen == compact_length:
                return i + 1
    return len(raw)


def _overlaps(f: Finding, others: Sequence[Finding]) -> bool:
    return any((f.start or 0) < (o.end or 0) and (o.start or 0) < (f.end or 0) for o in others)


_PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]*_\d+>")


@dataclass
class Vault:
    """Reversible redaction for one exchange: values ↔ placeholders such as ``<EMAIL_1>``.

    The vault lives only as long as the exchange (in the guard stage's closure): it is never stored,
    traced or cached.
    """

    _by_value: dict[str, str] = field(default_factory=dict)
    _by_placeholder: dict[str, str] = field(default_factory=dict)
    _counts: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self._by_placeholder)

    def placeholder(self, kind: str, value: str) -> str:
        existing = self._by_value.get(value)
        if existing is not None:
            return existing
        stem = PLACEHOLDER_STEMS.get(kind, kind.upper())
        n = self._counts.get(stem, 0) + 1
        self._counts[stem] = n
        token = f"<{stem}_{n}>"
        self._by_value[value] = token
        self._by_placeholder[token] = value
        return token

    def redact(self, text: str, findings: Sequence[Finding]) -> str:
        """``text`` with every finding's span replaced by its placeholder."""
        out: list[str] = []
        pos = 0
        for f in without_overlaps(findings):
            start, end = f.start or 0, f.end or 0
            out.append(text[pos:start])
            out.append(self.placeholder(f.kind, text[start:end]))
            pos = end
        out.append(text[pos:])
        return "".join(out)

    def restore(self, text: str) -> str:
        """``text`` with the placeholders this vault issued replaced by their values."""
        if not self._by_placeholder or "<" not in text:
            return text
        return _PLACEHOLDER.sub(lambda m: self._by_placeholder.get(m.group(), m.group()), text)

    def knows(self, placeholder: str) -> bool:
        return placeholder in self._by_placeholder


def mask(text: str, findings: Sequence[Finding]) -> str:
    """Irreversible redaction: each span becomes ``<KIND>`` (for traces and logs)."""
    out: list[str] = []
    pos = 0
    for f in without_overlaps(findings):
        out.append(text[pos : f.start or 0])
        out.append(f"<{PLACEHOLDER_STEMS.get(f.kind, f.kind.upper())}>")
        pos = f.end or 0
    out.append(text[pos:])
    return "".join(out)
