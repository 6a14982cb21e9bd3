"""Username normalisation and the signup format rules (DESIGN §5)."""

from __future__ import annotations

import re
import unicodedata

from .errors import InvalidUsername

MIN_LENGTH = 3
MAX_LENGTH = 254
# Letters and digits of any script (str.isalnum), plus . _ @ + - so e-mail addresses fit.
_ALLOWED_PUNCTUATION = frozenset("._@+-")
# Cc control, Cf format (zero-width, bidi controls), Co private use, Cs surrogates,
# Zl/Zp line and paragraph separators.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs", "Zl", "Zp"})
_WHITESPACE = re.compile(r"\s")


def normalize(username: str) -> str:
    """The canonical form: NFKC, case-folded, trimmed. Uniqueness is on this form."""
    return unicodedata.normalize("NFKC", username).casefold().strip()


def validate(username: str) -> str:
    """Normalise ``username`` for signup and check the format rules; raise InvalidUsername."""
    if any(unicodedata.category(char) in _FORBIDDEN_CATEGORIES for char in username):
        raise InvalidUsername(
            "The username contains control, zero-width or bidirectional characters."
        )
    normalized = normalize(username)
    if not MIN_LENGTH <= len(normalized) <= MAX_LENGTH:
        raise InvalidUsername(f"The username must be {MIN_LENGTH} to {MAX_LENGTH} characters long.")
    for char in normalized:
        if not (char.isalnum() or char in _ALLOWED_PUNCTUATION) or _WHITESPACE.match(char):
            raise InvalidUsername("The username may contain only letters, digits and . _ @ + -")
    return normalized
