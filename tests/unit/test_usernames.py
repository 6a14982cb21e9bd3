"""authsvc.security.usernames: the canonical form and the signup format rules (DESIGN §5)."""

from __future__ import annotations

import pytest

from authsvc.errors import InvalidUsername
from authsvc.security.usernames import normalize, validate


def assert_invalid(username: str) -> InvalidUsername:
    with pytest.raises(InvalidUsername) as info:
        validate(username)
    return info.value


# -- normalisation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "canonical"),
    [
        ("  Alice@Example.COM ", "alice@example.com"),
        ("ALICE", "alice"),
        ("ＡＬＩＣＥ", "alice"),  # fullwidth letters fold to ASCII
        ("ａｌｉｃｅ＿１２３", "alice_123"),  # fullwidth low line and digits
        ("\u00a0bob\u3000", "bob"),  # no-break and ideographic spaces at the ends are trimmed
        ("Straße", "strasse"),  # full case folding, not just lower()
        ("ΣΊΣΥΦΟΣ", "σίσυφοσ"),  # final sigma folds like any sigma
        ("ﬁnn", "finn"),  # compatibility ligature
        ("jose\u0301", "josé"),  # decomposed accent composes
    ],
)
def test_normalisation(typed, canonical):
    assert normalize(typed) == canonical
    assert validate(typed) == canonical


def test_normalisation_is_idempotent():
    for typed in ("  Alice@Example.COM ", "ＡＬＩＣＥ", "Straße", "ﬁnn", "jose\u0301"):
        once = normalize(typed)
        assert normalize(once) == once


def test_different_spellings_share_one_canonical_form():
    forms = {normalize(u) for u in ("alice", "ALICE", " Alice ", "ａｌｉｃｅ", "ＡＬＩＣＥ")}
    assert forms == {"alice"}


# -- allowed characters ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "username",
    [
        "alice",
        "alice.smith",
        "alice_smith",
        "alice-smith",
        "alice+tag@example.com",
        "first.last@sub.example.co.uk",
        "007",
        "user123",
        "ñandú",
        "josé",
        "пользователь",  # Cyrillic
        "χρήστης",  # Greek
        "用户名",  # Han
        "ユーザー",  # Katakana with the prolonged sound mark
        "사용자",  # Hangul
        "محمد",  # Arabic
        "משתמש",  # Hebrew
        "สมชาย",  # Thai
        "١٢٣",  # Arabic-Indic digits
    ],
)
def test_allowed_usernames(username):
    assert validate(username) == normalize(username)


@pytest.mark.parametrize(
    "username",
    [
        "İsmail",  # Turkish; every character is a letter, yet rejected
        "नमस्ते",  # Devanagari: vowel signs and virama are combining marks
        "মৌমিতা",  # Bengali
        "தமிழ்",  # Tamil
        "مُحَمَّد",  # Arabic with vowel marks
    ],
)
def test_letters_with_combining_marks_are_allowed(username):
    assert validate(username) == normalize(username)


# -- rejected characters ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "username",
    [
        "alice smith",  # space inside
        "alice\u00a0smith",  # no-break space inside (NFKC: a space)
        "alice\u3000smith",  # ideographic space inside
        "alice/smith",
        "../etc",
        "alice<script>",
        "alice>",
        'al"ice',
        "al'ice",
        "alice;drop",
        "alice,bob",
        "alice:bob",
        "alice#1",
        "alice%20",
        "alice&bob",
        "alice=bob",
        "alice\\bob",
        "alice!",
        "alice?",
        "alice😀",
        "😀😀😀",
        "alice\u2764\ufe0f",  # heart + variation selector
        "ali\u2800ce",  # braille blank
    ],
)
def test_disallowed_characters(username):
    assert_invalid(username)


@pytest.mark.parametrize(
    "char",
    [
        "\x00",
        "\x01",
        "\t",
        "\n",
        "\r",
        "\x1b",
        "\x7f",
        "\x85",  # NEL
        "\u2028",  # line separator
        "\u2029",  # paragraph separator
    ],
)
@pytest.mark.parametrize("position", ["start", "middle", "end"])
def test_control_characters_are_rejected_anywhere(char, position):
    username = {"start": char + "alice", "middle": "ali" + char + "ce", "end": "alice" + char}
    assert_invalid(username[position])


@pytest.mark.parametrize(
    "char",
    [
        "\u200b",  # zero width space
        "\u200c",  # zero width non-joiner
        "\u200d",  # zero width joiner
        "\u2060",  # word joiner
        "\ufeff",  # zero width no-break space / BOM
        "\u00ad",  # soft hyphen
        "\u034f",  # combining grapheme joiner
        "\u180e",  # Mongolian vowel separator
        "\U000e0041",  # tag character
    ],
)
@pytest.mark.parametrize("position", ["start", "middle", "end"])
def test_zero_width_characters_are_rejected_anywhere(char, position):
    username = {"start": char + "alice", "middle": "ali" + char + "ce", "end": "alice" + char}
    assert_invalid(username[position])


@pytest.mark.parametrize(
    "char",
    [
        "\u202a",  # LRE
        "\u202b",  # RLE
        "\u202c",  # PDF
        "\u202d",  # LRO
        "\u202e",  # RLO
        "\u2066",  # LRI
        "\u2067",  # RLI
        "\u2068",  # FSI
        "\u2069",  # PDI
        "\u200e",  # LRM
        "\u200f",  # RLM
        "\u061c",  # Arabic letter mark
    ],
)
def test_bidi_controls_are_rejected(char):
    assert_invalid("admin" + char + "moc.elpmaxe")
    assert_invalid(char + "alice")


@pytest.mark.parametrize("char", ["\u3164", "\uffa0", "\u115f", "\u1160"])
def test_invisible_hangul_fillers_are_rejected(char):
    assert_invalid("alice" + char)


def test_private_use_characters_are_rejected():
    assert_invalid("alice\ue000")


# -- length (after normalisation) ------------------------------------------------------------------


def test_length_bounds():
    assert_invalid("ab")
    assert validate("abc") == "abc"
    assert validate("a" * 254) == "a" * 254
    assert_invalid("a" * 255)


def test_length_is_counted_after_normalisation():
    assert_invalid("  ab  ")  # 6 typed, 2 after trimming
    assert_invalid("AB")
    assert validate(" abc ") == "abc"
    assert validate("ﬁa") == "fia"  # 2 typed, 3 after NFKC
    assert validate("ß" * 127) == "ss" * 127  # 127 typed, 254 after case folding
    assert_invalid("ß" * 128)  # 128 typed, 256 after case folding
    assert validate(" " + "A" * 254 + " ") == "a" * 254
    assert validate("e\u0301" * 254) == "é" * 254  # 508 typed code points, 254 characters


def test_empty_and_blank_usernames_are_rejected():
    assert_invalid("")
    assert_invalid("   ")
    assert_invalid("\u3000\u3000\u3000\u3000")


# -- the error -------------------------------------------------------------------------------------


def test_invalid_username_is_a_400_invalid_username():
    error = assert_invalid("a b")
    assert (error.status, error.code) == (400, "invalid_username")
    response = error.response()
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["code"] == "invalid_username"
    assert body["detail"]


@pytest.mark.parametrize(
    "username",
    ["\u0301abc", "bx\u0301\u0301\u0301\u0301c", "ab-\u0301c", "abc\u034f", "abc\ufe0f"],
    ids=[
        "leading mark",
        "four stacked marks",
        "mark after punctuation",
        "cgj",
        "variation selector",
    ],
)
def test_misplaced_or_invisible_marks_are_rejected(username):
    with pytest.raises(InvalidUsername):
        validate(username)
