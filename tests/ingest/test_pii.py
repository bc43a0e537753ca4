"""PII scrubbing: positives per kind, checksum rejections, a table of look-alikes left alone, invariants."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection

import pytest

from finetuneflow.text.pii import PII_KINDS, scrub

# Fake credentials are assembled from pieces so that secret scanners do not flag this file.
ALNUM36 = "A1b2C3d4E5" * 3 + "f6G7h8"
FAKE_SECRETS = [
    "sk-" + "abcDEF123456" * 4,  # OpenAI, legacy
    "sk-proj-" + "Ab3_cD5-eF7g" * 8,  # OpenAI, project key
    "sk-ant-api03-" + "xY9zW8vU7tS6" * 8,  # Anthropic
    "ghp_" + ALNUM36,
    "gho_" + ALNUM36,
    "ghs_" + ALNUM36,
    "github_pat_" + "11ABCDEFG0" * 3 + "_" + "aBcDeF1234" * 5,
    "AKIA" + "IOSFODNN7EXAMPLE",
    "xoxb-" + "123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    "AIza" + "SyA1b2C3d4E5f6G7h8I9j0K_L-mNoPqRsTu",
    "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGh",
    "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc",
    "rk_live_" + "4eC39HqLyjWDarjtT1zdp7dc",
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    + ".eyJzdWIiOiIxMjM0NTY3ODkwIn0"
    + ".dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
]


def check(text: str, expected_text: str, expected_counts: dict[str, int]) -> None:
    """Scrub text and compare the result and the counts exactly."""
    scrubbed, counts = scrub(text)
    assert scrubbed == expected_text
    assert counts == Counter(expected_counts)


def test_emails() -> None:
    check(
        "Write to alice@example.com, bob.smith+tag@mail.co.uk or <first_last@sub.domain.org>.",
        "Write to [EMAIL], [EMAIL] or <[EMAIL]>.",
        {"EMAIL": 3},
    )


@pytest.mark.parametrize(
    "phone",
    [
        "(555) 123-4567",
        "555-123-4567",
        "555.123.4567",
        "1-800-555-0199",
        "+44 20 7946 0958",
        "+1-202-555-0143",
        "+1 (202) 555-0143",
        "+49 (0)30 123456",
        "+14155552671",
        "01632 960418",
        "020 7946 0958",
    ],
)
def test_phone_formats(phone: str) -> None:
    check(f"Call {phone} today.", "Call [PHONE] today.", {"PHONE": 1})


def test_phones_counted_in_one_text() -> None:
    check(
        "Office: (555) 123-4567, mobile: +44 20 7946 0958; fax 01632 960418.",
        "Office: [PHONE], mobile: [PHONE]; fax [PHONE].",
        {"PHONE": 3},
    )


def test_ipv4() -> None:
    check(
        "Hosts 192.168.0.1, 10.0.0.1 and 255.255.255.0; DNS is 8.8.8.8.",
        "Hosts [IPV4], [IPV4] and [IPV4]; DNS is [IPV4].",
        {"IPV4": 4},
    )


def test_ipv6() -> None:
    check(
        "Full 2001:0db8:85a3:0000:0000:8a2e:0370:7334, short 2001:db8::1, link fe80::1%eth0, "
        "mapped ::ffff:192.0.2.1, url http://[2001:db8::2]:8080/.",
        "Full [IPV6], short [IPV6], link [IPV6], mapped [IPV6], url http://[[IPV6]]:8080/.",
        {"IPV6": 5},
    )


def test_iban() -> None:
    check(
        "Pay GB82 WEST 1234 5698 7654 32 or DE89370400440532013000, "
        "FR14 2004 1010 0505 0001 3M02 606 and NL91ABNA0417164300.",
        "Pay [IBAN] or [IBAN], [IBAN] and [IBAN].",
        {"IBAN": 4},
    )


def test_iban_with_wrong_check_digits_is_kept() -> None:
    for text in ("Pay GB83 WEST 1234 5698 7654 32 now.", "IBAN DE88370400440532013000"):
        assert scrub(text) == (text, Counter())


def test_cards() -> None:
    check(
        "Visa 4111 1111 1111 1111, MC 5500-0000-0000-0004, Amex 378282246310005, "
        "Amex 3782 822463 10005, Discover 6011111111111117.",
        "Visa [CARD], MC [CARD], Amex [CARD], Amex [CARD], Discover [CARD].",
        {"CARD": 5},
    )


def test_card_followed_by_more_digits_is_still_found() -> None:
    check("card 4111 1111 1111 1111 123 (cvv)", "card [CARD] 123 (cvv)", {"CARD": 1})


@pytest.mark.parametrize("text", ["4111 1111 1111 1112", "4111111111111112", "5500-0000-0000-0005"])
def test_luhn_invalid_card_is_kept(text: str) -> None:
    assert scrub(f"card {text}") == (f"card {text}", Counter())


@pytest.mark.parametrize("secret", FAKE_SECRETS)
def test_secret_shapes(secret: str) -> None:
    check(f'token = "{secret}"\n', 'token = "[SECRET]"\n', {"SECRET": 1})


def test_private_key_block_is_replaced_whole() -> None:
    block = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA1b2c3\nd4e5f6==\n-----END RSA PRIVATE KEY-----"
    check(f"key:\n{block}\nafter", "key:\n[SECRET]\nafter", {"SECRET": 1})
    truncated = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA"
    check(f"cut: {truncated}", "cut: [SECRET]", {"SECRET": 1})


def test_key_header_in_prose_does_not_swallow_the_rest() -> None:
    text = "Files start with -----BEGIN RSA PRIVATE KEY----- and then base64.\nNext paragraph (kept)."
    expected = "Files start with [SECRET] and then base64.\nNext paragraph (kept)."
    check(text, expected, {"SECRET": 1})


def test_bearer_value_only() -> None:
    check(
        "Authorization: Bearer 0a1b2c3d4e5f6a7b8c9d0e1f\nBearer authentication is described below.",
        "Authorization: Bearer [SECRET]\nBearer authentication is described below.",
        {"SECRET": 1},
    )


def test_secret_wins_over_other_kinds() -> None:
    # A JWT payload or key body must not be half-scrubbed as something else first.
    check(f"Bearer {FAKE_SECRETS[-1]}", "Bearer [SECRET]", {"SECRET": 1})


UNTOUCHED = {
    "versions": "Released 1.2.3, v2.0.1, 10.0.19045, 1.2.3.4.5 and Python 3.11.4 (build 2.13.0+cu121).",
    "semver": "Requires >=1.0.0-beta.1, ^4.17.21, ~0.12.0 and 2.0.0-rc.1+build.5.",
    "dates": "On 2024-01-15, 15/01/2024, 01/15/2024, 2024.01.15, 15.01.2024 and Jan 15, 2024.",
    "datetimes": "At 2024-01-15T10:30:00Z, 2024-01-15 10:30:45+05:30 and 20240115.",
    "times": "Meet at 12:30, 12:30:45, 23:59:59.999 or 9:05 pm.",
    "prices": "Costs $1,299.00, €49.99, £1,000,000 or USD 12,345.67 (+15.5%).",
    "short numbers": "Order #123456, ticket 98765, ISBN 0-306-40615-2, ISBN 978-3-16-148410-0, zip 90210.",
    "short phone-shaped": "Diff +12 lines, +3 -4; dial +44 20 or 555-1234 (ext. 12-345).",
    "years": "From 1999 to 2024, 2025-2026, and the 1990s.",
    "python code": (
        "x = 1234567\n"
        "ids = [1234567, 7654321]\n"
        "seed = 4111111111111111\n"
        "rng = np.random.default_rng(6011111111111117)\n"
        "colour = '#ff5733'  # or #FFF\n"
        "mask = 0xFFFF_0000 + 1_000_000 + 3e-4\n"
        "scores = q@k.transpose(-2, -1)\n"
        "evens = arr[::2] + arr[1::2]\n"
        "@dataclass(frozen=True)\n"
    ),
    "uuid": "id 123e4567-e89b-12d3-a456-426614174000",
    "git sha": "commit 9fceb02d0ae598e95dc970b74767f19372d61af8 (short 9fceb02)",
    "sha256": "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "markdown": (
        "See [the docs](https://example.com/docs/v1.2.3/guide.html#section-2) and "
        "![chart](images/chart-2024-01-15.png), or https://github.com/org/repo/blob/main/README.md."
    ),
    "mac address": "MAC 00:1a:2b:3c:4d:5e",
    "prose": "Bearer authentication and sk-learn-compatible estimators; the hf_hub_download helper.",
}


@pytest.mark.parametrize("name", sorted(UNTOUCHED))
def test_look_alikes_are_untouched(name: str) -> None:
    text = UNTOUCHED[name]
    assert scrub(text) == (text, Counter())


MIXED = (
    "Mail alice@example.com, call +44 20 7946 0958, card 4111 1111 1111 1111, "
    "IBAN GB82 WEST 1234 5698 7654 32, host 192.168.0.1 / 2001:db8::1, "
    f"key {FAKE_SECRETS[0]}."
)


def test_kinds_limits_what_is_scrubbed() -> None:
    scrubbed, counts = scrub(MIXED, kinds={"EMAIL"})
    assert scrubbed == MIXED.replace("alice@example.com", "[EMAIL]")
    assert counts == Counter({"EMAIL": 1})


def test_all_kinds_in_one_text() -> None:
    scrubbed, counts = scrub(MIXED)
    assert counts == Counter({kind: 1 for kind in PII_KINDS})
    assert all(f"[{kind}]" in scrubbed for kind in PII_KINDS)


@pytest.mark.parametrize("kinds", [{"EMAIL", "PASSPORT"}, ["email"]])
def test_unknown_kind_raises_listing_valid_kinds(kinds: Collection[str]) -> None:
    with pytest.raises(ValueError, match="valid kinds are SECRET, EMAIL, IBAN, CARD, IPV6, IPV4, PHONE"):
        scrub("text", kinds=kinds)


def test_bare_string_kinds_raises() -> None:
    with pytest.raises(ValueError, match="not a string"):
        scrub("text", kinds="EMAIL")


def test_scrub_is_idempotent() -> None:
    texts = [MIXED, *UNTOUCHED.values(), "card 4111 1111 1111 1111 123", "Bearer " + FAKE_SECRETS[-1]]
    for text in texts:
        once, _ = scrub(text)
        assert scrub(once) == (once, Counter())
