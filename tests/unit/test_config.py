"""authsvc.config: defaults (DESIGN §7), start-up validation and the development secret."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from authsvc import create_app
from authsvc.config import ConfigError, load_settings
from tests.support.settings import ISSUER, TEST_SECRET, base_config

PRODUCTION = {"AUTHSVC_SECRET_KEY": TEST_SECRET, "AUTHSVC_ISSUER": ISSUER}


def load(tmp_path: Path, **overrides: str):
    """Production settings with the required variables set, isolated from os.environ."""
    return load_settings(str(tmp_path), {**PRODUCTION, **overrides}, environ={})


def refused(tmp_path: Path, variable: str, **overrides: str) -> str:
    """The ConfigError message for these overrides; it must name ``variable``."""
    with pytest.raises(ConfigError) as info:
        load(tmp_path, **overrides)
    message = str(info.value)
    assert variable in message, message
    return message


# -- defaults --------------------------------------------------------------------------------------


def test_defaults_match_the_design_table(tmp_path):
    settings = load(tmp_path)
    assert settings.env == "production"
    assert not settings.development
    assert settings.secret_key == TEST_SECRET
    assert settings.issuer == ISSUER
    assert settings.audience == ("authsvc",)
    assert settings.database_url == f"sqlite:///{tmp_path / 'authsvc.db'}"
    assert settings.uses_sqlite
    assert settings.redis_url is None
    assert settings.signing_alg == "ES256"
    assert settings.access_token_ttl == 900
    assert settings.refresh_token_ttl == 2_592_000
    assert settings.session_max_age == 7_776_000
    assert settings.refresh_reuse_grace == 10
    assert settings.leeway == 10
    assert settings.key_rotation_days == 30
    assert settings.password_min_length == 12
    assert settings.password_max_length == 128
    assert settings.argon2_memory_kib == 19_456
    assert settings.argon2_time_cost == 2
    assert settings.argon2_parallelism == 1
    assert settings.ratelimit_enabled is True
    assert settings.ratelimit_login_username == "10/minute;100/hour"
    assert settings.ratelimit_login_address == "30/minute"
    assert settings.ratelimit_signup_address == "10/minute"
    assert settings.ratelimit_refresh_address == "60/minute"
    assert settings.jwks_max_age == 300
    assert settings.trusted_proxies == 0
    assert settings.token_location == ("headers",)
    assert settings.cors_origins == ()
    assert dict(settings.introspection_clients) == {}
    assert settings.breached_password_api is None


def test_development_defaults_the_issuer_to_localhost(tmp_path):
    settings = load_settings(str(tmp_path), {"AUTHSVC_ENV": "development"}, environ={})
    assert settings.development
    assert settings.issuer == "http://localhost:8000"


def test_values_come_from_environ_and_overrides_win(tmp_path):
    environ = {**PRODUCTION, "AUTHSVC_ACCESS_TOKEN_TTL": "300", "AUTHSVC_LEEWAY": "5"}
    settings = load_settings(str(tmp_path), {"AUTHSVC_LEEWAY": "0"}, environ=environ)
    assert settings.access_token_ttl == 300
    assert settings.leeway == 0


def test_lists_are_comma_separated(tmp_path):
    settings = load(
        tmp_path,
        AUTHSVC_AUDIENCE="api, billing",
        AUTHSVC_TOKEN_LOCATION="headers,cookies",
        AUTHSVC_CORS_ORIGINS="https://app.example.com,https://admin.example.com",
        AUTHSVC_INTROSPECTION_CLIENTS="billing:s3cret-one-0123456, reports:s3cret-two-0123456",
    )
    assert settings.audience == ("api", "billing")
    assert settings.token_location == ("headers", "cookies")
    assert settings.cors_origins == ("https://app.example.com", "https://admin.example.com")
    assert dict(settings.introspection_clients) == {
        "billing": "s3cret-one-0123456",
        "reports": "s3cret-two-0123456",
    }


def test_issuer_trailing_slash_is_dropped(tmp_path):
    # The issuer is compared byte for byte with `iss`; one canonical form, without the slash.
    assert load(tmp_path, AUTHSVC_ISSUER="https://auth.example.com/").issuer == (
        "https://auth.example.com"
    )


# -- the secret ------------------------------------------------------------------------------------


def test_production_requires_a_secret(tmp_path):
    with pytest.raises(ConfigError, match="AUTHSVC_SECRET_KEY"):
        load_settings(str(tmp_path), {"AUTHSVC_ISSUER": ISSUER}, environ={})


def test_production_ignores_a_secret_left_in_the_instance_folder(tmp_path):
    (tmp_path / "secret_key").write_text("x" * 64 + "\n")
    with pytest.raises(ConfigError, match="AUTHSVC_SECRET_KEY"):
        load_settings(str(tmp_path), {"AUTHSVC_ISSUER": ISSUER}, environ={})


def test_production_treats_a_blank_secret_as_missing(tmp_path):
    refused(tmp_path, "AUTHSVC_SECRET_KEY", AUTHSVC_SECRET_KEY="   ")


@pytest.mark.parametrize(
    "secret",
    [
        "short-but-random-Xy7",  # under 32 characters
        "0123456789abcdefghijklmnopqrstu",  # 31 characters
        "a" * 64,  # long, one distinct character
        "ab" * 40,  # long, two distinct characters
    ],
)
def test_production_refuses_a_weak_secret(tmp_path, secret):
    message = refused(tmp_path, "AUTHSVC_SECRET_KEY", AUTHSVC_SECRET_KEY=secret)
    assert secret not in message  # the message names the variable, never echoes the secret


def test_production_accepts_a_strong_secret(tmp_path):
    secret = "Zq4-vN9_rT2kLw8xYp1sHc6mJd3fBg7u"  # 32 random-looking characters
    assert load(tmp_path, AUTHSVC_SECRET_KEY=secret).secret_key == secret


def test_production_requires_an_issuer(tmp_path):
    with pytest.raises(ConfigError, match="AUTHSVC_ISSUER"):
        load_settings(str(tmp_path), {"AUTHSVC_SECRET_KEY": TEST_SECRET}, environ={})


def test_development_generates_and_keeps_a_secret(tmp_path):
    instance = tmp_path / "instance"  # does not exist yet
    first = load_settings(str(instance), {"AUTHSVC_ENV": "development"}, environ={})
    path = instance / "secret_key"
    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first.secret_key) >= 32
    assert path.read_text().strip() == first.secret_key

    second = load_settings(str(instance), {"AUTHSVC_ENV": "development"}, environ={})
    assert second.secret_key == first.secret_key


def test_development_secrets_differ_between_instance_folders(tmp_path):
    one = load_settings(str(tmp_path / "a"), {"AUTHSVC_ENV": "development"}, environ={})
    two = load_settings(str(tmp_path / "b"), {"AUTHSVC_ENV": "development"}, environ={})
    assert one.secret_key != two.secret_key


def test_development_uses_an_explicit_secret_and_writes_no_file(tmp_path):
    settings = load_settings(
        str(tmp_path), {"AUTHSVC_ENV": "development", "AUTHSVC_SECRET_KEY": "dev"}, environ={}
    )
    assert settings.secret_key == "dev"
    assert not (tmp_path / "secret_key").exists()


def test_unknown_environment_is_refused(tmp_path):
    refused(tmp_path, "AUTHSVC_ENV", AUTHSVC_ENV="staging")


# -- bad values name the variable ------------------------------------------------------------------


@pytest.mark.parametrize(
    "variable",
    [
        "AUTHSVC_ACCESS_TOKEN_TTL",
        "AUTHSVC_REFRESH_TOKEN_TTL",
        "AUTHSVC_SESSION_MAX_AGE",
        "AUTHSVC_REFRESH_REUSE_GRACE",
        "AUTHSVC_LEEWAY",
        "AUTHSVC_KEY_ROTATION_DAYS",
        "AUTHSVC_PASSWORD_MIN_LENGTH",
        "AUTHSVC_PASSWORD_MAX_LENGTH",
        "AUTHSVC_ARGON2_MEMORY_KIB",
        "AUTHSVC_ARGON2_TIME_COST",
        "AUTHSVC_ARGON2_PARALLELISM",
        "AUTHSVC_JWKS_MAX_AGE",
        "AUTHSVC_TRUSTED_PROXIES",
    ],
)
@pytest.mark.parametrize("value", ["fifteen", "1.5", "10s", "-1"])
def test_integers_refuse_non_integers_and_negatives(tmp_path, variable, value):
    refused(tmp_path, variable, **{variable: value})


@pytest.mark.parametrize(
    "variable", ["AUTHSVC_ACCESS_TOKEN_TTL", "AUTHSVC_REFRESH_TOKEN_TTL", "AUTHSVC_SESSION_MAX_AGE"]
)
def test_lifetimes_must_be_positive(tmp_path, variable):
    refused(tmp_path, variable, **{variable: "0"})


def test_leeway_is_at_most_60_seconds(tmp_path):
    assert load(tmp_path, AUTHSVC_LEEWAY="60").leeway == 60
    refused(tmp_path, "AUTHSVC_LEEWAY", AUTHSVC_LEEWAY="61")


def test_refresh_lifetime_cannot_exceed_the_session_lifetime(tmp_path):
    refused(
        tmp_path,
        "AUTHSVC_REFRESH_TOKEN_TTL",
        AUTHSVC_REFRESH_TOKEN_TTL="7200",
        AUTHSVC_SESSION_MAX_AGE="3600",
    )


@pytest.mark.parametrize("alg", ["HS256", "none", "es256", "PS256", "ES512"])
def test_unknown_signing_algorithm_is_refused(tmp_path, alg):
    refused(tmp_path, "AUTHSVC_SIGNING_ALG", AUTHSVC_SIGNING_ALG=alg)


@pytest.mark.parametrize("alg", ["ES256", "RS256", "EdDSA"])
def test_supported_signing_algorithms(tmp_path, alg):
    assert load(tmp_path, AUTHSVC_SIGNING_ALG=alg).signing_alg == alg


@pytest.mark.parametrize("location", ["cookies", "json,query_string", "query_string"])
def test_token_location_must_include_headers(tmp_path, location):
    refused(tmp_path, "AUTHSVC_TOKEN_LOCATION", AUTHSVC_TOKEN_LOCATION=location)


@pytest.mark.parametrize("location", ["headers,body", "headers,cookie", "headers,Cookies"])
def test_token_location_refuses_unknown_locations(tmp_path, location):
    refused(tmp_path, "AUTHSVC_TOKEN_LOCATION", AUTHSVC_TOKEN_LOCATION=location)


@pytest.mark.parametrize(
    "variable",
    [
        "AUTHSVC_RATELIMIT_LOGIN_USERNAME",
        "AUTHSVC_RATELIMIT_LOGIN_ADDRESS",
        "AUTHSVC_RATELIMIT_SIGNUP_ADDRESS",
        "AUTHSVC_RATELIMIT_REFRESH_ADDRESS",
    ],
)
@pytest.mark.parametrize(
    "value", ["lots", "ten/minute", "10/fortnight", "10", "/minute", "10/minute;;100/hour"]
)
def test_bad_rate_limit_strings_are_refused(tmp_path, variable, value):
    refused(tmp_path, variable, **{variable: value})


@pytest.mark.parametrize("value", ["5/second", "10 per minute", "10/minute;100/hour", "1000/day"])
def test_rate_limit_strings_in_the_documented_format(tmp_path, value):
    assert load(tmp_path, AUTHSVC_RATELIMIT_LOGIN_ADDRESS=value).ratelimit_login_address == value


@pytest.mark.parametrize("value", ["maybe", "2", "enabled"])
def test_ratelimit_enabled_must_be_a_boolean(tmp_path, value):
    refused(tmp_path, "AUTHSVC_RATELIMIT_ENABLED", AUTHSVC_RATELIMIT_ENABLED=value)


@pytest.mark.parametrize("value", ["false", "0", "no", "off", "FALSE"])
def test_ratelimit_can_be_disabled(tmp_path, value):
    assert load(tmp_path, AUTHSVC_RATELIMIT_ENABLED=value).ratelimit_enabled is False


def test_password_min_length_cannot_exceed_max_length(tmp_path):
    message = refused(
        tmp_path,
        "AUTHSVC_PASSWORD_MIN_LENGTH",
        AUTHSVC_PASSWORD_MIN_LENGTH="64",
        AUTHSVC_PASSWORD_MAX_LENGTH="32",
    )
    assert "AUTHSVC_PASSWORD_MAX_LENGTH" in message


def test_password_lengths_are_configurable(tmp_path):
    settings = load(tmp_path, AUTHSVC_PASSWORD_MIN_LENGTH="16", AUTHSVC_PASSWORD_MAX_LENGTH="64")
    assert (settings.password_min_length, settings.password_max_length) == (16, 64)


def test_argon2_parameters_are_configurable(tmp_path):
    settings = load(
        tmp_path,
        AUTHSVC_ARGON2_MEMORY_KIB="65536",
        AUTHSVC_ARGON2_TIME_COST="3",
        AUTHSVC_ARGON2_PARALLELISM="4",
    )
    assert (settings.argon2_memory_kib, settings.argon2_time_cost, settings.argon2_parallelism) == (
        65536,
        3,
        4,
    )


@pytest.mark.parametrize(
    "url",
    ["mysql://user:pw@db/authsvc", "mysql+pymysql://user@db/authsvc", "oracle://db/authsvc"],
)
def test_database_url_must_be_sqlite_or_postgresql(tmp_path, url):
    message = refused(tmp_path, "DATABASE_URL", DATABASE_URL=url)
    assert "pw@" not in message  # never echo credentials


@pytest.mark.parametrize(
    "url", ["postgres://user:pw@db:5432/authsvc", "postgresql://user:pw@db:5432/authsvc"]
)
def test_postgres_urls_use_psycopg3(tmp_path, url):
    settings = load(tmp_path, DATABASE_URL=url)
    assert settings.database_url == "postgresql+psycopg://user:pw@db:5432/authsvc"
    assert not settings.uses_sqlite


def test_explicit_psycopg_url_is_kept(tmp_path):
    url = "postgresql+psycopg://user@db/authsvc"
    assert load(tmp_path, DATABASE_URL=url).database_url == url


def test_sqlite_url_is_kept(tmp_path):
    url = f"sqlite:///{tmp_path / 'other.db'}"
    assert load(tmp_path, DATABASE_URL=url).database_url == url


def test_database_url_with_an_unshipped_postgres_driver(tmp_path):
    try:
        settings = load(tmp_path, DATABASE_URL="postgresql+psycopg2://user@db/authsvc")
    except ConfigError as error:
        assert "DATABASE_URL" in str(error)
    else:  # or it is rewritten to the driver the service ships with
        assert settings.database_url.startswith("postgresql+psycopg://")


def test_database_url_with_a_bogus_sqlite_like_scheme(tmp_path):
    refused(tmp_path, "DATABASE_URL", DATABASE_URL="sqlitex:///tmp/authsvc.db")


@pytest.mark.parametrize(
    "url", ["http://cache:6379", "cache:6379", "memcached://cache:11211", "localhost"]
)
def test_redis_url_scheme_is_checked(tmp_path, url):
    refused(tmp_path, "REDIS_URL", REDIS_URL=url)


@pytest.mark.parametrize(
    "url", ["redis://cache:6379/0", "rediss://:pw@cache:6380/1", "unix:///run/redis.sock"]
)
def test_redis_urls_accepted(tmp_path, url):
    assert load(tmp_path, REDIS_URL=url).redis_url == url


@pytest.mark.parametrize(
    "issuer",
    [
        "https://auth.example.com/?tenant=1",
        "https://auth.example.com?x=y",
        "https://auth.example.com/#frag",
        "auth.example.com",
        "ftp://auth.example.com",
        "https://",
    ],
)
def test_issuer_must_be_a_plain_http_url(tmp_path, issuer):
    refused(tmp_path, "AUTHSVC_ISSUER", AUTHSVC_ISSUER=issuer)


@pytest.mark.parametrize("issuer", ["https://auth.example.com?", "https://auth.example.com#"])
def test_issuer_with_an_empty_query_or_fragment(tmp_path, issuer):
    refused(tmp_path, "AUTHSVC_ISSUER", AUTHSVC_ISSUER=issuer)


def test_audience_must_not_contain_the_issuer(tmp_path):
    refused(tmp_path, "AUTHSVC_AUDIENCE", AUTHSVC_AUDIENCE=f"authsvc,{ISSUER}")


def test_audience_must_not_contain_the_operator_tokens_audience(tmp_path):
    refused(tmp_path, "AUTHSVC_AUDIENCE", AUTHSVC_AUDIENCE=f"authsvc,{ISSUER.rstrip('/')}/admin")


def test_audience_equal_to_the_issuer_with_a_trailing_slash_on_the_issuer(tmp_path):
    refused(
        tmp_path,
        "AUTHSVC_AUDIENCE",
        AUTHSVC_ISSUER="https://auth.example.com/",
        AUTHSVC_AUDIENCE="https://auth.example.com",
    )


@pytest.mark.parametrize("clients", ["billing", "billing:", ":s3cret", "ok:fine,broken"])
def test_malformed_introspection_clients_are_refused(tmp_path, clients):
    message = refused(
        tmp_path, "AUTHSVC_INTROSPECTION_CLIENTS", AUTHSVC_INTROSPECTION_CLIENTS=clients
    )
    assert "fine" not in message and "s3cret" not in message  # secrets are never echoed


def test_breached_password_api_must_be_an_http_url(tmp_path):
    refused(
        tmp_path,
        "AUTHSVC_BREACHED_PASSWORD_API",
        AUTHSVC_BREACHED_PASSWORD_API="ftp://hibp.example.com/range",
    )


def test_breached_password_api_is_kept(tmp_path):
    url = "https://api.pwnedpasswords.com/range"
    assert load(tmp_path, AUTHSVC_BREACHED_PASSWORD_API=url).breached_password_api == url


def test_unknown_override_is_refused(tmp_path):
    # A typo in an override must not silently fall back to a default.
    with pytest.raises(ConfigError, match="AUTHSVC_ACCES_TOKEN_TTL"):
        load(tmp_path, AUTHSVC_ACCES_TOKEN_TTL="60")


def test_unrelated_environment_variables_are_ignored(tmp_path):
    environ = {**PRODUCTION, "PATH": "/usr/bin", "AUTHSVC_SOMETHING_ELSE": "x"}
    assert load_settings(str(tmp_path), environ=environ).issuer == ISSUER


# -- secrets stay out of repr ----------------------------------------------------------------------


def test_introspection_secrets_are_not_in_repr(tmp_path):
    settings = load(
        tmp_path,
        AUTHSVC_INTROSPECTION_CLIENTS="billing:Bx7-very-secret-01,reports:Rq2-also-secret-01",
    )
    assert settings.introspection_clients["billing"] == "Bx7-very-secret-01"
    text = repr(settings)
    assert "Bx7-very-secret-01" not in text
    assert "Rq2-also-secret" not in text


def test_secret_key_is_not_in_repr(tmp_path):
    assert TEST_SECRET not in repr(load(tmp_path))


# -- create_app ------------------------------------------------------------------------------------


@pytest.fixture
def clean_environ(monkeypatch):
    """create_app reads os.environ: make sure no AUTHSVC_* variable of the shell leaks in."""
    for name in list(os.environ):
        if name.startswith("AUTHSVC_") or name in {"DATABASE_URL", "REDIS_URL"}:
            monkeypatch.delenv(name)


def test_create_app_surfaces_config_errors(clean_environ, tmp_path):
    database = {"DATABASE_URL": f"sqlite:///{tmp_path / 'authsvc.db'}"}
    with pytest.raises(ConfigError, match="AUTHSVC_LEEWAY"):
        create_app({**base_config(), **database, "AUTHSVC_LEEWAY": "61"})
    with pytest.raises(ConfigError, match="AUTHSVC_SIGNING_ALG"):
        create_app({**base_config(), **database, "AUTHSVC_SIGNING_ALG": "HS256"})
    with pytest.raises(ConfigError, match="AUTHSVC_SECRET_KEY"):
        create_app({**database, "AUTHSVC_ISSUER": ISSUER})


def test_create_app_refuses_an_unknown_override(clean_environ, tmp_path):
    database = {"DATABASE_URL": f"sqlite:///{tmp_path / 'authsvc.db'}"}
    with pytest.raises(ConfigError, match="JWT_SECRET_KEY"):
        create_app({**base_config(), **database, "JWT_SECRET_KEY": "x"})


def test_create_app_reads_the_environment(clean_environ, monkeypatch, tmp_path):
    for name, value in base_config().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'authsvc.db'}")
    monkeypatch.setenv("AUTHSVC_ACCESS_TOKEN_TTL", "not-a-number")
    with pytest.raises(ConfigError, match="AUTHSVC_ACCESS_TOKEN_TTL"):
        create_app()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("AUTHSVC_ISSUER", "https://user:pw@auth.example.com"),
        ("AUTHSVC_INTROSPECTION_CLIENTS", "svc:one,svc:two"),
        ("AUTHSVC_RATELIMIT_LOGIN_ADDRESS", "0/minute"),
    ],
    ids=["issuer with credentials", "duplicate introspection client", "zero rate limit"],
)
def test_more_refused_values(tmp_path, variable, value):
    refused(tmp_path, variable, **{variable: value})


def test_development_secret_is_shared_by_racing_processes(tmp_path):
    """Processes starting together agree on one secret; an empty file is refused, not used."""
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        secrets_seen = set(
            pool.map(
                lambda _: (
                    load_settings(
                        str(tmp_path), {"AUTHSVC_ENV": "development"}, environ={}
                    ).secret_key
                ),
                range(16),
            )
        )
    assert len(secrets_seen) == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".secret_key")]
    (tmp_path / "secret_key").write_text("")
    with pytest.raises(ConfigError, match="AUTHSVC_SECRET_KEY"):
        load_settings(str(tmp_path), {"AUTHSVC_ENV": "development"}, environ={})


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "sqlite:///file:x?mode=memory"])
def test_in_memory_sqlite_is_refused(tmp_path, url):
    refused(tmp_path, "DATABASE_URL", DATABASE_URL=url)


def test_short_introspection_secrets_are_refused_outside_development(tmp_path):
    message = refused(
        tmp_path, "AUTHSVC_INTROSPECTION_CLIENTS", AUTHSVC_INTROSPECTION_CLIENTS="orders:s3cret"
    )
    assert "'orders'" in message and "16" in message and "s3cret" not in message
    # A laptop's demo client may keep a short one.
    settings = load(
        tmp_path, AUTHSVC_ENV="development", AUTHSVC_INTROSPECTION_CLIENTS="orders:s3cret"
    )
    assert settings.introspection_clients == {"orders": "s3cret"}


@pytest.mark.parametrize("value", ["9100", "localhost", ":9100", "127.0.0.1:0", "h:99999", "h:x"])
def test_metrics_bind_must_be_host_and_port(tmp_path, value):
    refused(tmp_path, "AUTHSVC_METRICS_BIND", AUTHSVC_METRICS_BIND=value)


def test_metrics_bind(tmp_path):
    assert load(tmp_path).metrics_bind is None
    assert load(tmp_path, AUTHSVC_METRICS_BIND="[::1]:9100").metrics_bind == "[::1]:9100"


# --- second factors (DESIGN §10) ------------------------------------------------------------


def test_webauthn_defaults_follow_the_issuer(tmp_path):
    mfa = load(tmp_path).mfa
    assert mfa.webauthn_rp_id == "auth.test"
    assert mfa.webauthn_origins == (ISSUER,)
    assert mfa.required_roles == frozenset()
    assert mfa.ratelimit_code == "5/minute;20/hour;100/day"


def test_an_http_issuer_off_localhost_does_not_stop_the_start(tmp_path):
    # A compose network's issuer: no passkeys there, but the service starts.
    mfa = load(tmp_path, AUTHSVC_ISSUER="http://authsvc:8000").mfa
    assert mfa.webauthn_rp_id == "authsvc"


def test_webauthn_origins_must_sit_under_the_rp_id(tmp_path):
    mfa = load(
        tmp_path,
        AUTHSVC_WEBAUTHN_RP_ID="example.com",
        AUTHSVC_WEBAUTHN_ORIGINS="https://app.example.com,https://example.com",
    ).mfa
    assert mfa.webauthn_origins == ("https://app.example.com", "https://example.com")
    with pytest.raises(ConfigError, match="AUTHSVC_WEBAUTHN_RP_ID"):
        load(
            tmp_path,
            AUTHSVC_WEBAUTHN_RP_ID="example.com",
            AUTHSVC_WEBAUTHN_ORIGINS="https://evil-example.com",
        )


@pytest.mark.parametrize(
    "origin", ["http://app.example.com", "ftp://example.com", "https://example.com/path", "x"]
)
def test_webauthn_origins_are_https_origins(tmp_path, origin):
    with pytest.raises(ConfigError, match="AUTHSVC_WEBAUTHN_ORIGINS"):
        load(tmp_path, AUTHSVC_WEBAUTHN_RP_ID="example.com", AUTHSVC_WEBAUTHN_ORIGINS=origin)


def test_roles_that_require_a_factor_are_a_list(tmp_path):
    mfa = load(tmp_path, AUTHSVC_MFA_REQUIRED_ROLES="admin, support").mfa
    assert mfa.required_roles == frozenset({"admin", "support"})
