"""The layout of authsvc/, read with ast (nothing is imported). Each rule is a function returning
its violations, run on the real tree and, to prove it can fail, on a bad tree in tmp_path."""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]  # the repository, which holds authsvc/
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60
LEAVES = ("authsvc/extensions.py", "authsvc/errors.py")
# As specified, except that super() gets its own branch: `\b` cannot follow its ")".
PRIVATE_USE = re.compile(
    r"\b(?:PyJWS|PyJWT|jwt|pool|Pool|JWTManager)\b[\w.]*\._[a-z]\w*|\bsuper\(\)[\w.]*\._[a-z]\w*"
)
PRIVATE_HOOKS = {"_decode_jwt_from_config", "_encode_jwt_from_config"}
# The only private APIs of dependencies that authsvc uses, each in its adapter. "Owner._name"
# allows that attribute; a bare "_name" allows it on any owner (super()) and a def overriding it.
ALLOWED = {
    "authsvc/compat/pyjwt.py": {
        # PyJWT parses the same token four times a request: the parse is remembered.
        "PyJWS._load",
        # PyJWT's strict base64url check goes byte by byte: one bytes.translate instead.
        "PyJWS._decode_base64url_segment",
    },
    # flask-jwt-extended has no public hook where the verified-token cache could answer.
    "authsvc/compat/flask_jwt_extended.py": {"_decode_jwt_from_config"},
    # A disconnect invalidates every pooled connection, as Connection.execute does; the public
    # engine.dispose() would replace the pool on every thread's error instead.
    "authsvc/compat/sqlalchemy.py": {"pool._invalidate", "Pool._invalidate"},
}
SQL_BUILDERS = {"select", "update", "insert", "delete", "text", "exists"}
# models.py declares partial indexes, whose predicates are text() clauses. (Alembic's
# migrations/ sits outside authsvc/, so it is not checked at all.)
SQL_ALLOWED = {"authsvc/models.py": {"text"}}

Problems = list[str]


def sources(root: Path) -> dict[str, Path]:
    """Every module under root/authsvc by dotted name; a package's __init__ is the package."""
    found = {}
    for path in sorted((root / "authsvc").rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


@functools.cache
def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of the tree ``name`` imports anywhere (in functions, under TYPE_CHECKING)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    dotted: list[str] = []
    for node in ast.walk(parse(path)):
        if isinstance(node, ast.Import):
            dotted += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            anchor = package[: len(package) - node.level + 1] if node.level else []
            base = ".".join([*anchor, *([node.module] if node.module else [])])
            # `from pkg import x` is an edge to the module pkg.x when there is one, else to pkg.
            dotted += [f"{base}.{alias.name}" for alias in node.names]
    targets = set()
    for target in dotted:  # the longest prefix that is a module of the tree, if any
        while target and target not in known:
            target = target.rpartition(".")[0]
        targets.add(target)
    return targets - {"", name}


def import_graph(root: Path) -> dict[str, set[str]]:
    modules = sources(root)
    # Folders without an __init__.py are (namespace) packages too.
    folders = {rel(root, d).replace("/", ".") for d in (root / "authsvc").rglob("*") if d.is_dir()}
    known = {*modules, *folders, "authsvc"}
    return {name: imports(name, path, known) for name, path in modules.items()}


def cycle_problems(root: Path) -> Problems:
    graph, done, path = import_graph(root), set(), []

    def visit(node: str) -> list[str] | None:
        path.append(node)
        for target in sorted(graph[node]):
            if target in path:
                return [*path[path.index(target) :], target]
            if target not in done and (cycle := visit(target)):
                return cycle
        done.add(path.pop())
        return None

    for start in sorted(graph):
        if start not in done and (cycle := visit(start)):
            return [" -> ".join(cycle)]
    return []


def leaf_problems(root: Path) -> Problems:
    graph, names = import_graph(root), {rel(root, p): n for n, p in sources(root).items()}
    return [
        f"{leaf} imports {', '.join(sorted(graph[names[leaf]]))}" if leaf in names else leaf
        for leaf in LEAVES
        if leaf not in names or graph[names[leaf]]
    ]


def _functions(tree: ast.Module) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


def private_api_problems(root: Path) -> Problems:
    problems = []
    for path in sources(root).values():
        where, lines = rel(root, path), path.read_text(encoding="utf-8").splitlines()
        uses = [
            (number, ".".join(match.group().rsplit(".", 2)[-2:]))  # Owner._name
            for number, line in enumerate(lines, 1)
            if not line.lstrip().startswith("#")
            for match in PRIVATE_USE.finditer(line)
        ]
        hooks = [f for f in _functions(parse(path)) if f.name in PRIVATE_HOOKS]
        uses += [(function.lineno, f"def {function.name}") for function in hooks]
        allowed = ALLOWED.get(where, set()) if where.startswith("authsvc/compat/") else set()
        for number, use in uses:
            if use not in allowed and use.removeprefix("def ").rpartition(".")[2] not in allowed:
                problems.append(f"{where}:{number}: {use}")
    return problems


def size_problems(root: Path) -> Problems:
    problems = []
    for path in sources(root).values():
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES:
            problems.append(f"{rel(root, path)}: {lines} lines (at most {MAX_MODULE_LINES})")
        for function in _functions(parse(path)):
            if (lines := function.end_lineno - function.lineno + 1) > MAX_FUNCTION_LINES:
                where = f"{rel(root, path)}:{function.lineno} {function.name}()"
                problems.append(f"{where}: {lines} lines (at most {MAX_FUNCTION_LINES})")
    return problems


def blueprint_problems(root: Path) -> Problems:
    graph, blueprints = import_graph(root), set()
    for name, path in sources(root).items():
        calls = [n.func for n in ast.walk(parse(path)) if isinstance(n, ast.Call)]
        names = {getattr(func, "id", None) or getattr(func, "attr", None) for func in calls}
        if rel(root, path).startswith("authsvc/api/") and "Blueprint" in names:
            blueprints.add(name)
    return [f"{name} imports {other}" for name in blueprints for other in graph[name] & blueprints]


def hygiene_problems(root: Path) -> Problems:
    problems = []
    for path in sources(root).values():
        where = rel(root, path)
        store, service = where.startswith("authsvc/store/"), where.startswith("authsvc/services/")
        for node in ast.walk(parse(path)):
            if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
                continue
            names = {alias.name for alias in node.names}
            if service and node.module == "flask" and "request" in names:
                problems.append(f"{where}:{node.lineno}: a service imports flask.request")
            if node.module.split(".")[0] == "sqlalchemy" and not store:
                for builder in sorted(names & SQL_BUILDERS - SQL_ALLOWED.get(where, set())):
                    problems.append(f"{where}:{node.lineno}: {builder}() outside authsvc/store/")
    return problems


def _report(rule: str, problems: Problems) -> str:
    return f"{rule}:\n  " + "\n  ".join(problems)


def test_no_import_cycle():
    problems = cycle_problems(ROOT)
    assert not problems, _report("import cycle (in functions and TYPE_CHECKING too)", problems)


def test_extensions_and_errors_import_no_authsvc_module():
    assert not (problems := leaf_problems(ROOT)), _report("leaves import authsvc", problems)


def test_private_apis_of_dependencies_only_where_allowed_in_compat():
    problems = private_api_problems(ROOT)
    assert not problems, _report("a dependency's private API, not on ALLOWED", problems)


def test_modules_and_functions_are_small():
    assert not (problems := size_problems(ROOT)), _report("too long", problems)


def test_blueprints_never_import_each_other():
    assert not (problems := blueprint_problems(ROOT)), _report("blueprint imports", problems)


def test_no_request_in_services_and_no_sql_outside_the_store():
    problems = hygiene_problems(ROOT)
    assert not problems, _report("services take no request; SQL stays in authsvc/store/", problems)


BAD_TREE = {
    "authsvc/__init__.py": "",
    "authsvc/a.py": "def late():\n    import authsvc.b\n",
    "authsvc/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import X\n",
    "authsvc/errors.py": "",
    "authsvc/extensions.py": "from .errors import Problem\n",
    "authsvc/models.py": "from sqlalchemy import text\n",
    "authsvc/views.py": (
        "from sqlalchemy import select\n"
        "header = jwt.api_jws.PyJWS._load(token)\n"
        "# PyJWS._load in a comment is fine\n"
        "class Manager:\n"
        "    def _decode_jwt_from_config(self):\n"
        "        return super()._decode_jwt_from_config()\n"
    ),
    "authsvc/compat/pyjwt.py": "PyJWS._load = load\nPyJWS._verify_signature(x)\n",
    "authsvc/big.py": "def long():\n" + "    x = 1\n" * 60 + "x = 1\n" * 390,
    "authsvc/api/one.py": "from flask import Blueprint\nfrom . import two\nbp = Blueprint()\n",
    "authsvc/api/two.py": "import flask\nbp = flask.Blueprint('t', 't')\n",
    "authsvc/services/accounts.py": "from flask import request\n",
    "authsvc/store/users.py": "from sqlalchemy import select, update\n",
}
EXPECTED: dict[Callable[[Path], Problems], list[str]] = {
    cycle_problems: ["authsvc.a -> authsvc.b -> authsvc.a"],
    leaf_problems: ["authsvc/extensions.py imports authsvc.errors"],
    private_api_problems: [
        "authsvc/views.py:2: PyJWS._load",
        "authsvc/views.py:5: def _decode_jwt_from_config",
        "authsvc/views.py:6: super()._decode_jwt_from_config",
        "authsvc/compat/pyjwt.py:2: PyJWS._verify_signature",
    ],
    size_problems: [
        "authsvc/big.py: 451 lines (at most 450)",
        "authsvc/big.py:1 long(): 61 lines (at most 60)",
    ],
    blueprint_problems: ["authsvc.api.one imports authsvc.api.two"],
    hygiene_problems: [
        "authsvc/services/accounts.py:1: a service imports flask.request",
        "authsvc/views.py:1: select() outside authsvc/store/",
    ],
}


@pytest.mark.parametrize("check", list(EXPECTED), ids=lambda check: check.__name__)
def test_every_rule_fails_on_a_bad_tree(tmp_path: Path, check: Callable[[Path], Problems]):
    for name, text in BAD_TREE.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    # Exactly these: store/, models.py's text, PyJWS._load in compat and comments pass.
    assert sorted(check(tmp_path)) == sorted(EXPECTED[check])
