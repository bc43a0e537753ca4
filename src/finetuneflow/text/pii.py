"""Scrubbing personal data and credentials from text: typed placeholders, counts per kind.

Each kind is one precompiled regex that proposes candidates and a check that accepts them (Luhn
for cards, mod-97 for IBANs, `ipaddress` for IPv6, digit counts for phones). The patterns are
deliberately conservative: a false positive in code or documentation damages training data, while
a missed odd phone format costs little.

Speed: every pattern starts with a literal or a character class, so `re` can skip ahead to the
next possible start instead of trying each position; boundary look-behinds come after that first
character. Emails, IPv4 and IPv6 are found from their rarest character ("@", ".", ":") and the
part before it is recovered by a bounded look back.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass

# Kinds in the order they are applied. Secrets go first (a token can contain anything the other
# patterns look for); IBAN and card run before phone so their digits are never counted as a phone.
PII_KINDS: tuple[str, ...] = ("SECRET", "EMAIL", "IBAN", "CARD", "IPV6", "IPV4", "PHONE")

_Span = tuple[int, int]

# Countries that issue IBANs (SWIFT registry); a mod-97 check alone passes 1 in 97 random codes.
_IBAN_COUNTRIES = frozenset(
    "AD AE AL AT AZ BA BE BG BH BI BR BY CH CR CY CZ DE DJ DK DO EE EG "  # noqa: SIM905 - reads better as text
    "ES FI FK FO FR GB GE GI GL GR GT HR HU IE IL IQ IS IT JO KW KZ LB "
    "LC LI LT LU LV LY MC MD ME MK MN MR MT MU NI NL NO OM PK PL PS PT "
    "QA RO RS RU SA SC SD SE SI SK SM SO ST SV TL TN TR UA VA VG XK YE".split()
)


def _token(prefix: str, body: str, not_after: str = r"[\w-]") -> str:
    """A token pattern: the literal prefix first (fast to find), then a check on the character before it."""
    literal = re.escape(prefix)
    return f"{literal}(?<!{not_after}{literal}){body}"


# Only the value of "Bearer <token>" is a secret; the digit rule spares prose like "Bearer authentication".
_BEARER_VALUE = r"(?=[A-Za-z0-9._~+/-]*\d)[A-Za-z0-9._~+/-]{16,}=*"
_SECRET = re.compile(
    "|".join(
        (
            # The whole key block (bounded, key-like body: a stray header must not swallow the
            # rest of a document); without an END line, the header and the base64 lines after it.
            r"-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY-----(?:[A-Za-z0-9+/=:,.\s-]{0,16384}?"
            r"-----END[A-Z0-9 ]{0,40}PRIVATE KEY-----|(?:[ \t]*\r?\n[A-Za-z0-9+/=]{16,})*)",
            *(f"{word} {_BEARER_VALUE}" for word in ("Bearer", "bearer", "BEARER")),
            # OpenAI (sk-, sk-proj-) and Anthropic (sk-ant-); the digit rule spares words like sk-learn.
            _token("sk-", r"(?=[A-Za-z0-9_-]*\d)[A-Za-z0-9_-]{20,}"),
            _token("sk_live_", "[A-Za-z0-9]{10,}"),  # Stripe secret key
            _token("rk_live_", "[A-Za-z0-9]{10,}"),  # Stripe restricted key
            _token("gh", "[pousr]_[A-Za-z0-9]{36,}", not_after=r"\w"),  # GitHub classic tokens
            _token("github_pat_", "[A-Za-z0-9_]{22,}", not_after=r"\w"),  # GitHub fine-grained tokens
            _token("AKIA", "[0-9A-Z]{16}(?![A-Za-z0-9])", not_after="[A-Za-z0-9]"),  # AWS access key id
            _token("xox", "[abpr]-[A-Za-z0-9-]{10,}"),  # Slack
            _token("AIza", r"[0-9A-Za-z_-]{35}(?![\w-])"),  # Google API key
            _token("hf_", r"[A-Za-z]{34}(?!\w)", not_after=r"\w"),  # Hugging Face
            # JWT: base64url of '{"' is "eyJ", so the header always starts that way.
            _token("eyJ", r"[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),
        )
    )
)
# From "@" to the end of the domain; the local part is found by looking back (see _email_span).
# Not followed by "(" or "[": spares matrix products in code such as q@k.transpose(-2, -1).
_EMAIL_DOMAIN = re.compile(r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w(\[-])")
_EMAIL_LOCAL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}\Z")
_NOT_BEFORE_EMAIL = re.compile(r"[\w.%+-]")
# Groups of four with optional single spaces; the last group may be shorter (BBAN is 11-30 chars).
_IBAN = re.compile(r"[A-Z](?<!\w.)[A-Z]\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")
# Card networks' numbers start with 2-6; starting there spares millisecond timestamps and most IDs.
# Not right after "=", "(" or "[": an unquoted number there is a literal in code (a seed, a constant).
_CARD = re.compile(r"[2-6](?<![\w.,+/=(\[-].)(?<!= .)\d{3}(?:[ -]?\d){9,15}(?![\w/-]|[.,]\d)")
_ANY_LENGTH = frozenset(range(13, 20))
# (lowest prefix, highest prefix, lengths) of the major networks. Luhn alone passes one long number
# in ten, and code and data are full of long integers; this table rejects most of those as well.
_CARD_NETWORKS: tuple[tuple[int, int, frozenset[int]], ...] = (
    (4, 4, frozenset({13, 16, 19})),  # Visa
    (51, 55, frozenset({16})),  # Mastercard
    (2221, 2720, frozenset({16})),  # Mastercard 2-series
    (34, 34, frozenset({15})),  # American Express
    (37, 37, frozenset({15})),
    (300, 305, _ANY_LENGTH),  # Diners Club
    (36, 36, _ANY_LENGTH),
    (38, 39, _ANY_LENGTH),
    (6011, 6011, _ANY_LENGTH),  # Discover
    (644, 649, _ANY_LENGTH),
    (65, 65, _ANY_LENGTH),
    (3528, 3589, _ANY_LENGTH),  # JCB
    (62, 62, _ANY_LENGTH),  # UnionPay
    *(
        (prefix, prefix, _ANY_LENGTH) for prefix in (5018, 5020, 5038, 5893, 6304, 6759, 6761, 6762, 6763)
    ),  # Maestro
)
# From the first ":" on; up to four hex digits before it are found by looking back (see _ipv6_span).
_IPV6_TAIL = re.compile(
    r":[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){1,6}(?:(?<=:)\d{1,3}(?:\.\d{1,3}){3})?(?:%\w+)?(?![\w:]|\.\d)"
)
_IPV6_HEAD = re.compile(r"[0-9A-Fa-f]{0,4}\Z")
_NOT_BEFORE_IPV6 = re.compile(r"[\w:.]")
# From the first "." on; not followed by another dotted number, so 1.2.3.4.5 is a version, not an address.
_IPV4_TAIL = re.compile(r"\.\d{1,3}\.\d{1,3}\.\d{1,3}(?!\w|\.\d)")
_IPV4_HEAD = re.compile(r"\d{1,3}\Z")
_NOT_BEFORE_IPV4 = re.compile(r"[\w.§]")  # section numbers such as §7.3.2.1
_OCTET = re.compile(r"0|[1-9]\d{0,2}")
# The first character is matched before the boundary check so `re` can skip to the next "+", "(" or
# digit; each branch then says, by look-behind, which first character it belongs to.
_PHONE = re.compile(
    r"[+(\d](?<![\w.+/$#-].)(?:"
    # International: +44 20 7946 0958, +1-202-555-0143, +1 (202) 555-0143, +49 (0)30 123456.
    # At most three country-code digits, then a separator: spares diff lines such as "+2024-01-15".
    r"(?<=\+)[1-9]\d{0,2}(?:[ -]?\(\d{1,4}\)[ -]?\d{1,6})?(?:[ -]\d{1,6}){1,6}"
    r"|(?<=\+)[1-9]\d{6,14}"  # E.164 without separators: +14155552671
    r"|(?<=\()[2-9]\d{2}\) ?\d{3}[-. ]\d{4}"  # (555) 123-4567
    r"|(?<=1)[ -]\([2-9]\d{2}\) ?\d{3}[-. ]\d{4}"  # 1 (555) 123-4567
    r"|(?<=1)-[2-9]\d{2}-\d{3}-\d{4}"  # 1-800-555-0199
    r"|(?<=1)\.[2-9]\d{2}\.\d{3}\.\d{4}"  # 1.800.555.0199
    r"|(?<=[2-9])\d{2}-\d{3}-\d{4}"  # 555-123-4567
    r"|(?<=[2-9])\d{2}\.\d{3}\.\d{4}"  # 555.123.4567
    r"|(?<=0)[1-9]\d{1,4}[ -]\d{3,8}(?:[ -]\d{3,4})?"  # trunk prefix 0: 020 7946 0958, 01632 960418
    r")(?![\w/+-]|[.,:]\d)"
)
_GROUP_SEPARATOR = re.compile(r"[ -]")
_NON_DIGIT = re.compile(r"\D")

_Accept = Callable[[str, re.Match[str]], _Span | None]


@dataclass(frozen=True)
class _Detector:
    """One PII kind: a pattern proposing candidates and a check deciding what to replace."""

    kind: str
    pattern: re.Pattern[str]
    accept: _Accept
    """The span of text to replace for a candidate match, or None to leave it untouched."""


def _secret_span(text: str, match: re.Match[str]) -> _Span | None:
    """Accept a secret; for "Bearer <token>" only the token is replaced."""
    start, end = match.span()
    if text[start : start + 7].lower() == "bearer ":
        return start + 7, end
    return start, end


def _head_start(text: str, pos: int, head: re.Pattern[str], reach: int, not_before: re.Pattern[str]) -> int:
    """Start of the run matched by head (anchored with \\Z) that ends at pos; -1 if the run is bounded badly.

    The run is rejected when the character before it matches not_before, which also catches runs
    longer than reach.
    """
    found = head.search(text, max(0, pos - reach), pos)
    if found is None:
        return -1
    start = found.start()
    return -1 if start > 0 and not_before.match(text, start - 1) else start


def _email_span(text: str, match: re.Match[str]) -> _Span | None:
    """Extend an "@domain" match back over its local part (at most 64 characters)."""
    start = _head_start(text, match.start(), _EMAIL_LOCAL, 64, _NOT_BEFORE_EMAIL)
    return None if start < 0 else (start, match.end())


def _group_prefixes(candidate: str) -> list[str]:
    """The candidate and its shorter prefixes that end at a group separator, longest first.

    A greedy match may swallow a following group ("4111 1111 1111 1111 123" with a CVV after it);
    trying the shorter prefixes still finds the number inside.
    """
    cuts = [match.start() for match in _GROUP_SEPARATOR.finditer(candidate)]
    return [candidate, *(candidate[:cut] for cut in reversed(cuts))]


def luhn_ok(digits: str) -> bool:
    """True if a string of digits passes the Luhn checksum used by payment cards."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def card_number_ok(digits: str) -> bool:
    """True if a string of digits has a major card network's prefix and length and passes Luhn."""
    network = any(
        len(digits) in lengths and low <= int(digits[: len(str(low))]) <= high
        for low, high, lengths in _CARD_NETWORKS
    )
    return network and luhn_ok(digits)


def _card_groups_ok(candidate: str) -> bool:
    """Grouped numbers use one separator kind, a first group of 4 and later groups of 3-6 digits."""
    separators = set(_GROUP_SEPARATOR.findall(candidate))
    if not separators:
        return True
    groups = _GROUP_SEPARATOR.split(candidate)
    return len(separators) == 1 and len(groups[0]) == 4 and all(3 <= len(g) <= 6 for g in groups[1:])


def _card_span(text: str, match: re.Match[str]) -> _Span | None:
    """The longest grouped prefix that is a valid card number (see card_number_ok)."""
    for prefix in _group_prefixes(match.group()):
        digits = _NON_DIGIT.sub("", prefix)
        if _card_groups_ok(prefix) and card_number_ok(digits):
            return match.start(), match.start() + len(prefix)
    return None


def iban_ok(iban: str) -> bool:
    """True if an IBAN (spaces allowed) has a known country, a plausible length and a valid mod-97 check."""
    compact = iban.replace(" ", "")
    if not (15 <= len(compact) <= 34 and compact[:2] in _IBAN_COUNTRIES and compact.isalnum()):
        return False
    # Real BBANs are mostly digits; this spares upper-case product codes that happen to pass mod 97.
    if sum(char.isdigit() for char in compact[4:]) * 2 < len(compact) - 4:
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def _iban_span(text: str, match: re.Match[str]) -> _Span | None:
    """The longest grouped prefix that is a valid IBAN."""
    for prefix in _group_prefixes(match.group()):
        if iban_ok(prefix):
            return match.start(), match.start() + len(prefix)
    return None


def _ipv6_span(text: str, match: re.Match[str]) -> _Span | None:
    """Extend a ":..." match back over its first group; accept valid addresses that are not code.

    "fe80::1" and "2001::1" have a full first group; "a::b" and "::2" (slices such as x[1::2])
    have neither three groups nor a full first one.
    """
    start = _head_start(text, match.start(), _IPV6_HEAD, 4, _NOT_BEFORE_IPV6)
    if start < 0:
        return None
    candidate = text[start : match.end()]
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return None
    groups = [group for group in candidate.split("%")[0].split(":") if group]
    if len(groups) >= 3 or (len(groups) == 2 and len(groups[0]) == 4):
        return start, match.end()
    return None


def _ipv4_span(text: str, match: re.Match[str]) -> _Span | None:
    """Extend a ".b.c.d" match back over its first octet; accept four octets of 0-255, no leading zeros."""
    start = _head_start(text, match.start(), _IPV4_HEAD, 3, _NOT_BEFORE_IPV4)
    if start < 0:
        return None
    octets = text[start : match.end()].split(".")
    if all(_OCTET.fullmatch(octet) and int(octet) <= 255 for octet in octets):
        return start, match.end()
    return None


def _phone_span(text: str, match: re.Match[str]) -> _Span | None:
    """Accept international numbers of 7-15 digits (E.164) and national ones of 10-11 digits."""
    digits = len(_NON_DIGIT.sub("", match.group()))
    low, high = (7, 15) if match.group().startswith("+") else (10, 11)
    return match.span() if low <= digits <= high else None


_DETECTORS: tuple[_Detector, ...] = (
    _Detector("SECRET", _SECRET, _secret_span),
    _Detector("EMAIL", _EMAIL_DOMAIN, _email_span),
    _Detector("IBAN", _IBAN, _iban_span),
    _Detector("CARD", _CARD, _card_span),
    _Detector("IPV6", _IPV6_TAIL, _ipv6_span),
    _Detector("IPV4", _IPV4_TAIL, _ipv4_span),
    _Detector("PHONE", _PHONE, _phone_span),
)


def _select_kinds(kinds: Collection[str] | None) -> frozenset[str]:
    """The requested kinds as a set; None means all.

    Raises:
        ValueError: a kind is not one of PII_KINDS, or kinds is a bare string.
    """
    if kinds is None:
        return frozenset(PII_KINDS)
    if isinstance(kinds, str):
        raise ValueError(f"kinds must be a collection of kind names such as {{{kinds!r}}}, not a string")
    unknown = sorted(set(kinds) - set(PII_KINDS))
    if unknown:
        raise ValueError(f"unknown PII kind(s): {', '.join(unknown)}; valid kinds are {', '.join(PII_KINDS)}")
    return frozenset(kinds)


def _scrub_one(text: str, detector: _Detector, counts: Counter[str]) -> str:
    """Replace what one detector accepts with its placeholder, counting replacements."""
    placeholder = f"[{detector.kind}]"
    pieces: list[str] = []
    done = 0  # text before this offset is already copied or replaced
    for match in detector.pattern.finditer(text):
        span = detector.accept(text, match)
        # A look-back may reach into the previous replacement; that candidate is skipped.
        if span is None or span[0] < done:
            continue
        pieces += (text[done : span[0]], placeholder)
        done = span[1]
        counts[detector.kind] += 1
    if not pieces:
        return text
    pieces.append(text[done:])
    return "".join(pieces)


def scrub(text: str, kinds: Collection[str] | None = None) -> tuple[str, Counter[str]]:
    """Replace PII in text with typed placeholders such as "[EMAIL]"; returns (text, count per kind).

    kinds limits scrubbing to some of PII_KINDS (None: all). The counts only hold kinds that were
    found. Scrubbing is idempotent: placeholders never match again.

    Raises:
        ValueError: kinds names an unknown kind (the message lists the valid ones).
    """
    selected = _select_kinds(kinds)
    counts: Counter[str] = Counter()
    for detector in _DETECTORS:
        if detector.kind in selected:
            text = _scrub_one(text, detector, counts)
    return text, counts
