"""Username normalisation and the signup format rules (DESIGN §5)."""

from __future__ import annotations

import unicodedata

from ..errors import InvalidUsername

MIN_LENGTH = 3
MAX_LENGTH = 254
_ALLOWED_PUNCTUATION = frozenset("._@+-")
# Cc control, Cf format (zero-width, bidi controls), Co private use, Cs surrogates,
# Zl/Zp line and paragraph separators: refused outright, with their own message.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs", "Zl", "Zp"})
_LETTER_OR_DIGIT = frozenset({"Lu", "Ll", "Lt", "Lm", "Lo", "Nd", "Nl", "No"})
_COMBINING = frozenset({"Mn", "Mc"})
# Marks stacked deeper than this are for drawing over text, not for writing a name.
_MAX_STACKED_MARKS = 3
# Default_Ignorable_Code_Point characters outside category Cf: they render as nothing, so
# "alice" plus one of them would look exactly like "alice". (Hangul fillers are category Lo.)
_INVISIBLE = frozenset(
    "\u034f\u115f\u1160\u17b4\u17b5\u180b\u180c\u180d\u180f\u3164\uffa0"
    + "".join(chr(c) for c in range(0xFE00, 0xFE10))
    + "".join(chr(c) for c in range(0xE0100, 0xE01F0))
)


def normalize(username: str) -> str:
    """The canonical form: NFKC, case-folded, trimmed. Uniqueness is on this form."""
    return unicodedata.normalize("NFKC", username).casefold().strip()


def validate(username: str) -> str:
    """Normalise ``username`` for signup and check the format rules; raise InvalidUsername.

    Letters and digits of any script, with the combining marks that scripts such as Devanagari
    or Arabic (and a case-folded Turkish "İ") need after a letter; plus . _ @ + - for e-mail
    addresses.
    """
    if any(unicodedata.category(char) in _FORBIDDEN_CATEGORIES for char in username):
        raise InvalidUsername(
            "The username contains control, zero-width or bidirectional characters."
        )
    normalized = normalize(username)
    if any(char in _INVISIBLE for char in normalized):
        raise InvalidUsername("The username contains invisible characters.")
    if not MIN_LENGTH <= len(normalized) <= MAX_LENGTH:
        raise InvalidUsername(f"The username must be {MIN_LENGTH} to {MAX_LENGTH} characters long.")
    stacked = 0
    previous_is_letter = False
    for char in normalized:
        category = unicodedata.category(char)
        if category in _COMBINING:
            stacked += 1
            if not previous_is_letter or stacked > _MAX_STACKED_MARKS:
                raise InvalidUsername("The username has a misplaced combining mark.")
            continue
        stacked = 0
        previous_is_letter = category in _LETTER_OR_DIGIT
        if not previous_is_letter and char not in _ALLOWED_PUNCTUATION:
            raise InvalidUsername("The username may contain only letters, digits and . _ @ + -")
    return normalized
