"""authsvc.security.passwords: argon2id hashing, legacy upgrades, NFKC, dummy verify, policy."""

from __future__ import annotations

import secrets
import statistics
import string
import time
import unicodedata

import argon2
import bcrypt
import pytest
from passlib.hash import pbkdf2_sha256

from authsvc.config import load_settings
from authsvc.errors import WeakPassword
from authsvc.security.passwords import PasswordHasher, PasswordPolicy, common_passwords
from tests.support.settings import ISSUER, TEST_SECRET

PASSWORD = "correct horse battery staple"
OWASP_PREFIX = "$argon2id$v=19$m=19456,t=2,p=1$"


def cheap_hasher(memory_kib: int = 64, time_cost: int = 1, parallelism: int = 1) -> PasswordHasher:
    return PasswordHasher(memory_kib=memory_kib, time_cost=time_cost, parallelism=parallelism)


@pytest.fixture(scope="module")
def default_hasher() -> PasswordHasher:
    """The hasher the service builds from its default settings (the real OWASP cost)."""
    settings = load_settings(
        "/nonexistent", {"AUTHSVC_SECRET_KEY": TEST_SECRET, "AUTHSVC_ISSUER": ISSUER}, environ={}
    )
    return PasswordHasher(
        memory_kib=settings.argon2_memory_kib,
        time_cost=settings.argon2_time_cost,
        parallelism=settings.argon2_parallelism,
    )


@pytest.fixture(scope="module")
def default_hash(default_hasher) -> str:
    return default_hasher.hash(PASSWORD)


@pytest.fixture
def hasher() -> PasswordHasher:
    return cheap_hasher()


@pytest.fixture
def policy() -> PasswordPolicy:
    settings = load_settings(
        "/nonexistent", {"AUTHSVC_SECRET_KEY": TEST_SECRET, "AUTHSVC_ISSUER": ISSUER}, environ={}
    )
    return PasswordPolicy(
        min_length=settings.password_min_length, max_length=settings.password_max_length
    )


# -- hashing at the default cost -------------------------------------------------------------------


def test_default_hash_is_argon2id_with_owasp_parameters(default_hash):
    assert default_hash.startswith(OWASP_PREFIX)
    # Independently readable by argon2-cffi with the same parameters.
    parameters = argon2.extract_parameters(default_hash)
    assert parameters.type is argon2.Type.ID
    assert (parameters.memory_cost, parameters.time_cost, parameters.parallelism) == (19456, 2, 1)
    assert argon2.PasswordHasher().verify(default_hash, PASSWORD)


def test_default_hash_is_salted(default_hasher, default_hash):
    assert default_hasher.hash(PASSWORD) != default_hash


def test_default_hash_verifies_without_update(default_hasher, default_hash):
    assert default_hasher.verify_and_update(PASSWORD, default_hash) == (True, None)
    assert default_hasher.verify_and_update(PASSWORD + "!", default_hash) == (False, None)
    assert not default_hasher.needs_update(default_hash)


def test_dummy_verify_costs_about_one_real_verification(default_hasher, default_hash):
    """An unknown username must answer in the time of a wrong password (DESIGN §2)."""
    default_hasher.dummy_verify("warm up")  # the first call also builds the dummy hash

    def median(call) -> float:
        times = []
        for _ in range(5):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    real = median(lambda: default_hasher.verify_and_update("a wrong password!", default_hash))
    dummy = median(lambda: default_hasher.dummy_verify("a wrong password!"))
    assert real / 2 <= dummy <= real * 2, (real, dummy)


def test_dummy_verify_returns_nothing_and_never_raises(hasher):
    assert hasher.dummy_verify(PASSWORD) is None
    assert hasher.dummy_verify("x" * 4096) is None
    assert hasher.dummy_verify("") is None


# -- verify and update -----------------------------------------------------------------------------


def test_right_password_verifies_wrong_one_does_not(hasher):
    stored = hasher.hash(PASSWORD)
    assert stored.startswith("$argon2id$")
    assert hasher.verify_and_update(PASSWORD, stored) == (True, None)
    assert hasher.verify_and_update("correct horse battery stapl", stored) == (False, None)
    assert hasher.verify_and_update("", stored) == (False, None)


@pytest.mark.parametrize(
    ("changed", "expected"),
    [
        (dict(memory_kib=128), "m=128,t=1,p=1"),
        (dict(time_cost=2), "m=64,t=2,p=1"),
        (dict(parallelism=2), "m=64,t=1,p=2"),
    ],
)
def test_changed_parameters_rehash_on_verify(hasher, changed, expected):
    stored = hasher.hash(PASSWORD)
    stronger = cheap_hasher(**changed)
    assert stronger.needs_update(stored)
    ok, new_hash = stronger.verify_and_update(PASSWORD, stored)
    assert ok
    assert new_hash is not None and new_hash.startswith(f"$argon2id$v=19${expected}$")
    # The new hash is the same password, and is now current.
    assert stronger.verify_and_update(PASSWORD, new_hash) == (True, None)


def test_wrong_password_never_returns_a_new_hash(hasher):
    stored = hasher.hash(PASSWORD)
    assert cheap_hasher(memory_kib=128).verify_and_update("wrong password", stored) == (False, None)


def test_other_argon2_variants_are_upgraded_to_argon2id(hasher):
    legacy = argon2.PasswordHasher(
        memory_cost=64, time_cost=1, parallelism=1, type=argon2.Type.I
    ).hash(PASSWORD)
    assert legacy.startswith("$argon2i$")
    ok, new_hash = hasher.verify_and_update(PASSWORD, legacy)
    assert ok
    assert new_hash is not None and new_hash.startswith("$argon2id$")


@pytest.mark.parametrize("prefix", [b"2b", b"2a"])
def test_legacy_bcrypt_verifies_and_is_upgraded(hasher, prefix):
    legacy = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4, prefix=prefix)).decode()
    assert hasher.needs_update(legacy)
    ok, new_hash = hasher.verify_and_update(PASSWORD, legacy)
    assert ok
    assert new_hash is not None and new_hash.startswith("$argon2id$v=19$m=64,t=1,p=1$")
    assert hasher.verify_and_update(PASSWORD, new_hash) == (True, None)
    assert hasher.verify_and_update("wrong password", legacy) == (False, None)


def test_legacy_pbkdf2_verifies_and_is_upgraded(hasher):
    legacy = pbkdf2_sha256.using(rounds=1000).hash(PASSWORD)
    assert legacy.startswith("$pbkdf2-sha256$")
    ok, new_hash = hasher.verify_and_update(PASSWORD, legacy)
    assert ok
    assert new_hash is not None and new_hash.startswith("$argon2id$")
    assert hasher.verify_and_update(PASSWORD, new_hash) == (True, None)
    assert hasher.verify_and_update("wrong password", legacy) == (False, None)


def test_password_over_72_bytes_against_bcrypt_is_a_clean_false(hasher):
    long_password = "x" * 80
    legacy = bcrypt.hashpw(long_password[:72].encode(), bcrypt.gensalt(rounds=4)).decode()
    # bcrypt would silently compare only the first 72 bytes and say yes; we never truncate.
    assert hasher.verify_and_update(long_password, legacy) == (False, None)
    # Multibyte characters: 30 x 3-byte characters are 90 bytes.
    assert hasher.verify_and_update("€" * 30, legacy) == (False, None)


def test_password_of_exactly_72_bytes_against_bcrypt_verifies(hasher):
    password = "y" * 72
    legacy = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    ok, new_hash = hasher.verify_and_update(password, legacy)
    assert ok and new_hash is not None and new_hash.startswith("$argon2id$")


def test_long_passwords_are_never_truncated_with_argon2(hasher):
    long_password = "z" * 100 + "tail"
    stored = hasher.hash(long_password)
    assert hasher.verify_and_update(long_password, stored) == (True, None)
    assert hasher.verify_and_update("z" * 100, stored) == (False, None)
    assert hasher.verify_and_update("z" * 100 + "tale", stored) == (False, None)


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "garbage",
        "*",
        "!",  # a common "locked account" marker
        "$argon2id$garbage",
        "$argon2id$v=19$m=64,t=1,p=1$$",
        "$argon2id$v=19$m=1,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2g",
        "$argon2id$v=19$m=64,t=0,p=1$c2FsdHNhbHQ$aGFzaGhhc2g",
        "$argon2id$v=19$m=64,t=1,p=0$c2FsdHNhbHQ$aGFzaGhhc2g",
        "$argon2id$v=16$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2g",
        "$2b$12$short",
        "$2b$04$" + "." * 53,  # well-formed, matches nothing
        "$pbkdf2-sha256$0$abc$def",
        "$1$saltsalt$qjXMvbEw8oaL.CzflDugX/",  # md5_crypt: not a scheme we accept
        "pbkdf2_sha256$600000$salt$aGFzaA==",  # Django's format: not accepted either
        "\x00\x01\x02",
    ],
)
def test_garbage_stored_hash_is_false_not_an_exception(hasher, stored):
    assert hasher.verify_and_update(PASSWORD, stored) == (False, None)


def test_truncated_or_extended_real_hash_is_false(hasher):
    stored = hasher.hash(PASSWORD)
    assert hasher.verify_and_update(PASSWORD, stored[:-4]) == (False, None)
    assert hasher.verify_and_update(PASSWORD, stored + "AAAA") == (False, None)


# -- normalisation ---------------------------------------------------------------------------------


def test_compatibility_forms_verify_against_the_nfkc_hash(hasher):
    typed = "ｃｏｒｒｅｃｔ ｈｏｒｓｅ ﬁne ①②③"  # fullwidth letters, a ligature, circled digits
    nfkc = unicodedata.normalize("NFKC", typed)
    assert nfkc == "correct horse fine 123"
    stored = hasher.hash(nfkc)
    assert hasher.verify_and_update(typed, stored) == (True, None)
    # And the other way round: a hash made from what the user typed verifies the NFKC form.
    assert hasher.verify_and_update(nfkc, hasher.hash(typed)) == (True, None)


def test_composed_and_decomposed_accents_are_the_same_password(hasher):
    composed = "mot de passe très sûr"
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    assert hasher.verify_and_update(decomposed, hasher.hash(composed)) == (True, None)


def test_case_and_whitespace_are_never_changed(hasher):
    stored = hasher.hash("Passphrase with Capitals")
    assert hasher.verify_and_update("Passphrase with Capitals", stored) == (True, None)
    assert hasher.verify_and_update("passphrase with capitals", stored) == (False, None)
    assert hasher.verify_and_update("PASSPHRASE WITH CAPITALS", stored) == (False, None)
    assert hasher.verify_and_update(" Passphrase with Capitals", stored) == (False, None)
    assert hasher.verify_and_update("Passphrase with Capitals ", stored) == (False, None)
    assert hasher.verify_and_update("Passphrase  with Capitals", stored) == (False, None)


# -- policy ----------------------------------------------------------------------------------------


def test_weak_password_is_a_400_weak_password():
    error = WeakPassword("too short")
    assert (error.status, error.code) == (400, "weak_password")
    response = error.response()
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["code"] == "weak_password"


def random_letters(length: int) -> str:
    return "".join(secrets.choice(string.ascii_lowercase) for _ in range(length))


@pytest.mark.parametrize("length", [12, 13, 64, 127, 128])
def test_lengths_within_the_default_bounds_are_accepted(policy, length):
    password = random_letters(length)
    assert policy.check(password) == password


@pytest.mark.parametrize("length", [0, 1, 11, 129, 500])
def test_lengths_outside_the_default_bounds_are_rejected(policy, length):
    with pytest.raises(WeakPassword) as info:
        policy.check(random_letters(length))
    assert (info.value.status, info.value.code) == (400, "weak_password")


def test_configured_bounds_are_honoured():
    policy = PasswordPolicy(min_length=20, max_length=24)
    assert policy.check(random_letters(20))
    assert policy.check(random_letters(24))
    for length in (19, 25):
        with pytest.raises(WeakPassword):
            policy.check(random_letters(length))


def test_length_is_counted_after_nfkc(policy):
    # "e" + combining acute: 2 code points typed, 1 after NFKC.
    decomposed = "e\u0301"
    assert policy.check(decomposed * 12) == "é" * 12
    with pytest.raises(WeakPassword):
        policy.check(decomposed * 11)  # 22 typed code points, 11 characters
    # The ligature "ﬁ" is 1 typed character, 2 after NFKC.
    assert policy.check("ﬁ" * 6) == "fi" * 6
    assert policy.check("ﬁ" * 64) == "fi" * 64
    with pytest.raises(WeakPassword):
        policy.check("ﬁ" * 65)  # 65 typed characters, 130 after NFKC


def test_check_returns_the_normalised_password(policy):
    assert policy.check("ｆｕｌｌｗｉｄｔｈ ｐａｓｓ") == "fullwidth pass"


def test_common_password_list_is_large_enough():
    assert len(common_passwords()) >= 20_000


def test_common_password_file_is_sorted_for_bisection():
    entries = [entry.encode() for entry in common_passwords()]
    assert entries == sorted(set(entries))


def test_common_password_lookup_agrees_with_a_set():
    listed = common_passwords()
    as_set = set(listed)
    assert len(as_set) == len(listed)
    assert all(entry in listed for entry in as_set)
    near_misses = {
        variant
        for entry in list(as_set)[::97]
        for variant in (entry + "\x00", entry[:-1], entry + "z", "~" + entry)
    }
    for candidate in near_misses | {
        "",
        "\udcff",
        "ё",
        "\U0010ffff",
        "correct horse battery staple",
    }:
        assert (candidate in listed) == (candidate in as_set), candidate
    assert 42 not in listed


def long_common_passwords() -> list[str]:
    entries = sorted(p for p in common_passwords() if 12 <= len(p) <= 128 and p.isascii())
    letters = [p for p in entries if any(c.isalpha() for c in p)]
    assert len(letters) >= 20  # the list has long entries to test with
    return letters[:: max(1, len(letters) // 20)][:20]


@pytest.mark.parametrize("common", ["qwertyqwerty", "administrator", "peanutbutter"])
def test_known_entries_are_on_the_list(common):
    assert common in common_passwords()


@pytest.mark.parametrize("transform", [str, str.upper, str.title, str.swapcase])
def test_common_passwords_are_rejected_case_insensitively(policy, transform):
    for common in long_common_passwords():
        with pytest.raises(WeakPassword):
            policy.check(transform(common))


def test_common_password_in_fullwidth_form_is_rejected(policy):
    fullwidth = "".join(chr(ord(c) + 0xFEE0) for c in "peanutbutter")
    assert fullwidth != "peanutbutter"
    with pytest.raises(WeakPassword):
        policy.check(fullwidth)


def test_common_password_with_something_added_is_not_on_the_list(policy):
    assert policy.check("peanutbutter jelly time") == "peanutbutter jelly time"


def test_password_equal_to_the_username_is_rejected(policy):
    username = "alice.wonderland@example.com"
    for password in (username, username.upper(), "Alice.Wonderland@Example.com"):
        with pytest.raises(WeakPassword):
            policy.check(password, username=username)
    # Merely containing the username is allowed.
    assert policy.check(username + " forever", username=username)


@pytest.mark.parametrize(
    "password",
    [
        "sjdkwoqpxmznvbal",  # lowercase letters only
        "7291 4038 5562 1897",  # digits and spaces
        "ПарольНаРусском2024",
        "日本語のとても長いパスワードです",
        "🔐🔑🗝️ emoji passphrase 🗝️🔑🔐",
    ],
)
def test_any_composition_is_allowed(policy, password):
    assert policy.check(password) == unicodedata.normalize("NFKC", password)


def test_long_random_phrase_of_lowercase_letters_is_fine(policy):
    phrase = " ".join(random_letters(6) for _ in range(5))
    assert policy.check(phrase) == phrase
