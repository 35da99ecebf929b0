"""Free-text hygiene shared by domains that store text: redact contact details and people's names.

Customers write contact details in every shape: ``+44 20 7946 0958``, ``(555) 123-4567``,
``555.123.4567``, ``0049 30 1234567``. Phone numbers are found with ``phonenumbers`` (Google's
libphonenumber), not a hand-written pattern: its matcher knows each country's dialling prefixes,
trunk prefixes and groupings. It runs at :attr:`phonenumbers.Leniency.POSSIBLE`, because a
redactor must also catch numbers that are well formed but not allocated (fiction and test ranges,
typos, new ranges the metadata does not know yet); what that leniency would over-match in business
text is filtered out here: identifiers (``POL-0000123``, ``CLM-0008911``), amounts, dates and
digit runs too short to be a full phone number are kept.

Names are given per row (the person the text is about, from the owning domain's port): the full
name, each of its parts alone, a title with the last name (``Mrs Smith``) and possessives
(``Olivia's``) are replaced, case-insensitively and as whole words. A part that is also an
everyday word (a customer called *May*) is redacted wherever it appears in that customer's text:
privacy wins over readability.

Everything is vectorised where it matters for 100k transcripts: pandas (RE2 through pyarrow) finds
the rows that can hold an address or a phone number at all, the matcher runs on the phone-like runs
of those rows only, and each distinct name's pattern is compiled once.
"""

from __future__ import annotations

import re
from functools import lru_cache

import pandas as pd
import phonenumbers

DEFAULT_REGION = "GB"
"""Region assumed for phone numbers written without an international prefix (``07700 900123``)."""

EMAIL_PLACEHOLDER, PHONE_PLACEHOLDER, NAME_PLACEHOLDER = "[email]", "[phone]", "[name]"

# RFC 5322 "dot-atom" local part (the quoted form does not occur in chat text) at a domain of
# dot-separated labels that neither start nor end with a hyphen, ending in an alphabetic TLD.
EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}(?![\w-])"
)

# A run of nine or more digits written the way phone numbers are (spaces, dots, dashes, brackets,
# a leading "+"), that does not continue an identifier (``POL-0000123``). It only keeps the matcher
# off text that cannot hold a phone number; the matcher decides what is one. Spelled with ASCII
# classes so that pandas runs it vectorised (RE2 through pyarrow) on text with "£" or accents.
_MIN_DIGITS = 9  # national significant number plus trunk or country code: "555 123 4567", "020 7946 0958"
_SEPARATOR = "[ \t\u00a0().-]"  # a real no-break space in the pattern: RE2 does not take "\u" escapes
_PHONE_RUN = r"[+(]?[0-9](?:%s{0,3}[0-9]){%d,}" % (_SEPARATOR, _MIN_DIGITS - 1)
_PHONE_CANDIDATE = r"(?:^|[^A-Za-z0-9_-])" + _PHONE_RUN
_PHONE_RUNS = re.compile(r"(?<![\w-])" + _PHONE_RUN)
_ONLY_SEPARATORS = re.compile(_SEPARATOR + "*")
_IDENTIFIER_BEFORE = re.compile(r"(?:\w|[^\W\d][-_/#])$")  # continues "POL-0000123", "ref#1234567890", "AB12345678901"
_CURRENCY_BEFORE = re.compile(r"[$£€¥₹]\s*$")
_GROUPED_BEFORE = re.compile(r"\d[,.]$")  # "1," of "1,234,567.89": the matcher may start after it
_DIGIT_GROUPS = re.compile(r"\d{3}(?:[,.]\d+)*")
_AMOUNT = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+\.\d{1,2}")
# A date, or the start of a timestamp ("2026-06-30 14" of "2026-06-30 14:05").
_DATE = re.compile(r"(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4})(?:[ T]\d{1,2})?")

TITLES = ("mr", "mrs", "ms", "miss", "mx", "dr", "prof", "sir", "dame")
_TITLE_BEFORE = re.compile(r"(?<![a-z])(?:" + "|".join(TITLES) + r")\.?\s+$")  # on lower-cased text


def _check_region(region: str) -> str:
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"unknown phone region {region!r}: expected an ISO 3166 region code such as 'GB' or 'US'")
    return region


def _replace_rows(text: pd.Series, rows: pd.Series, redact) -> pd.Series:
    """``text`` with ``redact`` applied to the rows selected by the boolean mask ``rows``."""
    if not rows.any():
        return text
    out = text.copy()
    out[rows] = [redact(t) for t in text[rows].tolist()]
    return out


def _splice(text: str, spans: list[tuple[int, int]], placeholder: str) -> str:
    for start, end in reversed(spans):
        text = text[:start] + placeholder + text[end:]
    return text


def redact_emails(text: pd.Series) -> pd.Series:
    """Replace every email address with ``[email]``."""
    text = text.astype("str")
    return _replace_rows(text, text.str.contains("@", regex=False, na=False), lambda t: EMAIL.sub(EMAIL_PLACEHOLDER, t))


def _is_phone_number(text: str, start: int, end: int) -> bool:
    """Whether the number at ``text[start:end]`` can be a phone number, not an id, amount or date."""
    raw = text[start:end]
    before, after = text[max(0, start - 3) : start], text[end : end + 1]
    if _IDENTIFIER_BEFORE.search(before) or _CURRENCY_BEFORE.search(before) or after.isalnum():
        return False
    if _GROUPED_BEFORE.search(before) and _DIGIT_GROUPS.fullmatch(raw):
        return False
    if _AMOUNT.fullmatch(raw) or _DATE.fullmatch(raw):
        return False
    return sum(ch.isdigit() for ch in raw) >= _MIN_DIGITS


def _phone_spans(text: str, region: str) -> list[tuple[int, int]]:
    """Where ``text`` holds phone numbers, found by libphonenumber's matcher in each phone-like run.

    When two numbers are written with nothing but a space between them ("07700 900123 020 7946
    0958") the matcher may split the first into pieces too short to keep; consecutive pieces are
    joined again when together they make a possible number. A run in which the matcher finds no
    number at all ("1 415 555 0132" read as a UK number) is redacted whole unless it is an id,
    amount or date: a long number in a customer's message is a contact or account detail.
    """
    spans = []
    for run in _PHONE_RUNS.finditer(text):
        found = []
        pending: tuple[int, int] | None = None  # short pieces joined so far
        for m in phonenumbers.PhoneNumberMatcher(run.group(), region, leniency=phonenumbers.Leniency.POSSIBLE):
            start, end = run.start() + m.start, run.start() + m.end
            if _is_phone_number(text, start, end):
                found.append((start, end))
                pending = None
            elif pending is not None and _ONLY_SEPARATORS.fullmatch(text, pending[1], start):
                pending = (pending[0], end)
                if _is_phone_number(text, *pending) and _possible(text[pending[0] : pending[1]], region):
                    found.append(pending)
                    pending = None
            else:
                pending = (start, end)
        if not found and _is_phone_number(text, run.start(), run.end()):
            found.append(run.span())
        spans.extend(found)
    return spans


def _possible(candidate: str, region: str) -> bool:
    try:
        return phonenumbers.is_possible_number(phonenumbers.parse(candidate, region))
    except phonenumbers.NumberParseException:
        return False


def redact_phone_numbers(text: pd.Series, region: str = DEFAULT_REGION) -> pd.Series:
    """Replace every phone number with ``[phone]``; ``region`` reads numbers without a ``+`` prefix."""
    region = _check_region(region)
    text = text.astype("str")
    candidates = text.str.contains(_PHONE_CANDIDATE, regex=True, na=False)
    return _replace_rows(text, candidates, lambda t: _splice(t, _phone_spans(t, region), PHONE_PLACEHOLDER))


def _name_words(name: str) -> list[str]:
    return [w for w in (w.strip(".,") for w in name.lower().split()) if w and w not in TITLES]


@lru_cache(maxsize=65536)
def name_parts(name: str) -> tuple[str, ...]:
    """The lower-cased words of a name that identify a person alone (initials and titles do not)."""
    return tuple(w for w in _name_words(name) if len(w.strip("'-")) > 1)


@lru_cache(maxsize=65536)
def name_pattern(name: str) -> re.Pattern | None:
    """The pattern of one person's full name (initials included) or any of its parts, in lower case.

    It is matched against lower-cased text, and the start of a word is checked by the caller:
    without a look-behind and case-folding, ``re`` skips ahead to the names' first letters.
    """
    parts = name_parts(name)
    if not parts:
        return None
    words = _name_words(name)
    full = r"\.?\s+".join(re.escape(w) for w in words)
    singles = sorted({re.escape(p) for p in parts}, key=len, reverse=True)
    alternatives = [full, *singles] if len(words) > 1 else singles
    return re.compile("(?:" + "|".join(alternatives) + r")(?!\w)")


def _name_spans(lowered: str, pattern: re.Pattern) -> list[tuple[int, int]]:
    """Spans of ``pattern`` in ``lowered`` that start a word, each widened to a title before it."""
    spans = []
    for m in pattern.finditer(lowered):
        start = m.start()
        if start and (lowered[start - 1].isalnum() or lowered[start - 1] == "_"):
            continue  # inside a word: "smithson" ends with no name
        title = _TITLE_BEFORE.search(lowered, max(0, start - 8), start)
        spans.append((title.start() if title else start, m.end()))
    return spans


def redact_names(text: pd.Series, names: pd.Series) -> pd.Series:
    """Replace, row by row, the given person's name (full, parts, ``Mrs <Last>``) with ``[name]``.

    ``names`` holds one name per row of ``text`` (by position); a missing name leaves its row as
    it is. Matching is case-insensitive and by whole words; a possessive keeps its ``'s``.
    """
    if len(names) != len(text):
        raise ValueError(f"redact_names: {len(names)} name(s) for {len(text)} text row(s); give one name per row")
    text = text.astype("str")
    values = text.tolist()
    lowered = text.str.lower().tolist()
    changed = False
    for i, name in enumerate(names.tolist()):
        if not isinstance(name, str) or not isinstance(values[i], str) or not any(p in lowered[i] for p in name_parts(name)):
            continue  # a substring test is far cheaper than the pattern
        low = lowered[i]
        if len(low) != len(values[i]):  # lower-casing changed the length (e.g. "İ"): offsets would not map back
            low = values[i]
            pattern = re.compile(name_pattern(name).pattern, re.IGNORECASE)
        else:
            pattern = name_pattern(name)
        spans = _name_spans(low, pattern)
        if spans:
            values[i] = _splice(values[i], spans, NAME_PLACEHOLDER)
            changed = True
    return pd.Series(values, index=text.index, dtype="str") if changed else text


def redact_contact_details(text: pd.Series, names: pd.Series | None = None, region: str = DEFAULT_REGION) -> pd.Series:
    """Replace email addresses, phone numbers and (given per row) the person's name with placeholders.

    Emails go first, so that a name inside an address (``olivia.smith@...``) is not half-replaced.
    """
    out = redact_phone_numbers(redact_emails(text), region=region)
    if names is not None:
        out = redact_names(out, names)
    return out


def holds_contact_details(text: pd.Series, region: str = DEFAULT_REGION) -> pd.Series:
    """Which rows of ``text`` hold an email address or a phone number (a boolean mask, nulls False).

    The detector the platform runs over every text column that a private table stores
    unclassified (:mod:`mesh_platform.products.private`). Each distinct value is examined once, so a column
    of codes or dates costs one pass however many rows repeat them.
    """
    region = _check_region(region)
    present = text.dropna()
    distinct = pd.Series(pd.unique(present.astype("str")), dtype="str")
    if distinct.empty:
        return pd.Series(False, index=text.index)
    values = distinct.tolist()
    at_sign = distinct.str.contains("@", regex=False, na=False).to_numpy(dtype=bool)
    phone_like = distinct.str.contains(_PHONE_CANDIDATE, regex=True, na=False).to_numpy(dtype=bool)
    flagged = {t for t, has_at in zip(values, at_sign) if has_at and EMAIL.search(t) is not None}
    flagged |= {t for t, like in zip(values, phone_like) if like and t not in flagged and _phone_spans(t, region)}
    if not flagged:
        return pd.Series(False, index=text.index)
    return text.astype("str").isin(flagged) & text.notna()
