"""Bounded loopback load for authsvc: mixed signup/login/refresh/me/logout, then verification.

    python bench/load.py --url http://127.0.0.1:8000 --clients 8 --seconds 60

N client threads run for a fixed time (and at most --max-requests requests in all), each with
accounts and sessions of its own, and record the status and latency of every request. Then,
with the load stopped, the script verifies what the service promised:

- no response was a 5xx, and no request failed at the connection level;
- every answer was the one a correct service gives (a live session's /me is 200, ...);
- every account created (201) can log in;
- every logged-out session is dead: its refresh token gets 401 on /refresh and its access token
  401 on /me;
- every session still live answers /me with 200.

It prints a summary (requests, per-endpoint counts, statuses and p50/p99 latency) and exits 1 on
any violation, 0 otherwise. Only loopback targets (localhost, 127.0.0.0/8, [::1]) are accepted.
429 answers (a server with throttling on) are counted, not violations, during the load; during
verification they are, because nothing was verified: run against a server with
AUTHSVC_RATELIMIT_ENABLED=false.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import random
import secrets
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests

MAX_CLIENTS = 64
MAX_SECONDS = 3600
REQUEST_TIMEOUT = 30.0
# Share of each action while a client has accounts and live sessions.
MIX = {"signup": 10, "login": 15, "refresh": 20, "me": 40, "logout": 15}
LOGOUT_SCOPES = {"local": 8, "others": 1, "global": 1}
MAX_REPORTED_VIOLATIONS = 20
# A client that cannot reach the server stops instead of spinning until the deadline.
MAX_CONSECUTIVE_ERRORS = 10

EXIT_OK, EXIT_VIOLATIONS, EXIT_USAGE = 0, 1, 2
# Phases, the first word of each endpoint name in the report: the load itself, then the checks
# that every account created logs in, every logged-out session is dead, every live one alive.
LOAD = "load"


class UsageError(ValueError):
    pass


def loopback_url(url: str) -> str:
    """``url`` without a trailing slash, if it is an http(s) URL of this machine; else raise."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018  (raises ValueError on a malformed port)
    except ValueError as error:
        raise UsageError(f"not a valid URL: {url!r} ({error})") from None
    if parts.scheme not in {"http", "https"} or not host:
        raise UsageError(f"not an http(s) URL: {url!r}")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise UsageError(f"the URL must not carry credentials, a query or a fragment: {url!r}")
    if host != "localhost":
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False  # a name other than localhost: never resolved, never contacted
        if not loopback:
            raise UsageError(
                f"refusing {host!r}: this load script only targets this machine "
                "(localhost, 127.0.0.0/8 or [::1])"
            )
    return url.rstrip("/")


# -- bookkeeping ---------------------------------------------------------------------------------


@dataclass
class Account:
    username: str
    password: str


@dataclass
class Session:
    account: Account
    access_token: str
    refresh_token: str
    access_expires_at: float


@dataclass
class Stats:
    """What one thread saw. Merged into one at the end (threads share nothing while running)."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    violations: list[str] = field(default_factory=list)
    violation_kinds: Counter = field(default_factory=Counter)
    accounts: list[Account] = field(default_factory=list)
    live: list[Session] = field(default_factory=list)
    dead: list[Session] = field(default_factory=list)

    def violation(self, kind: str, detail: str) -> None:
        self.violation_kinds[kind] += 1
        if len(self.violations) < MAX_REPORTED_VIOLATIONS:
            self.violations.append(f"{kind}: {detail}")

    def merge(self, other: Stats) -> None:
        for name, values in other.latencies.items():
            self.latencies[name].extend(values)
        for name, counter in other.statuses.items():
            self.statuses[name].update(counter)
        for item in other.violations:
            if len(self.violations) < MAX_REPORTED_VIOLATIONS:
                self.violations.append(item)
        self.violation_kinds.update(other.violation_kinds)
        self.accounts.extend(other.accounts)
        self.live.extend(other.live)
        self.dead.extend(other.dead)


class Budget:
    """The shared request budget: a deadline and a maximum count."""

    def __init__(self, seconds: float, max_requests: int) -> None:
        self.deadline = time.monotonic() + seconds
        self.remaining = max_requests
        self.lock = threading.Lock()

    def take(self) -> bool:
        if time.monotonic() >= self.deadline:
            return False
        with self.lock:
            if self.remaining <= 0:
                return False
            self.remaining -= 1
            return True


class Client:
    """One HTTP keep-alive connection and the requests it made."""

    def __init__(self, base_url: str, stats: Stats, phase: str) -> None:
        self.base_url = base_url
        self.stats = stats
        self.phase = phase
        self.http = requests.Session()
        self.http.headers["User-Agent"] = "authsvc-bench-load/1"
        self.consecutive_errors = 0

    def close(self) -> None:
        self.http.close()

    def send(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        body: dict[str, Any] | None = None,
    ) -> tuple[int | str, dict[str, Any]]:
        """(status or "error", JSON body or {}); records status and latency under the endpoint."""
        name = f"{self.phase} {method} {path}"
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        started = time.perf_counter()
        try:
            response = self.http.request(
                method,
                self.base_url + path,
                json=body,
                headers=headers,
                timeout=REQUEST_TIMEOUT,
                allow_redirects=False,
            )
        except requests.RequestException as error:
            self.consecutive_errors += 1
            self.stats.latencies[name].append(time.perf_counter() - started)
            self.stats.statuses[name]["error"] += 1
            self.stats.violation("connection error", f"{method} {path}: {type(error).__name__}")
            return "error", {}
        self.consecutive_errors = 0
        self.stats.latencies[name].append(time.perf_counter() - started)
        self.stats.statuses[name][response.status_code] += 1
        if response.status_code >= 500:
            self.stats.violation(
                "server error", f"{method} {path} -> {response.status_code} {response.text[:200]}"
            )
        try:
            payload = response.json() if response.content else {}
        except ValueError:
            payload = {}
        return response.status_code, payload if isinstance(payload, dict) else {}

    def expect(self, status: int | str, expected: int, what: str, payload: dict[str, Any]) -> bool:
        if status == expected:
            return True
        if status == 429 and self.phase == LOAD:
            return False  # throttled: counted, not a violation while loading
        if status != "error" and not (isinstance(status, int) and status >= 500):
            code = payload.get("code", "")
            self.stats.violation("unexpected status", f"{what}: {status} {code} (want {expected})")
        return False


# -- the load ------------------------------------------------------------------------------------


def _session(account: Account, payload: dict[str, Any]) -> Session:
    return Session(
        account=account,
        access_token=payload["access_token"],
        refresh_token=payload["refresh_token"],
        access_expires_at=time.monotonic() + float(payload.get("expires_in", 0)),
    )


def _weighted(rng: random.Random, weights: dict[str, int]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


class LoadClient:
    def __init__(self, base_url: str, index: int, run_id: str, seed: int) -> None:
        self.stats = Stats()
        self.client = Client(base_url, self.stats, LOAD)
        self.rng = random.Random(f"{seed}-{index}")  # noqa: S311 - picks actions, not secrets
        self.prefix = f"load-{run_id}-{index}"
        self.counter = 0

    def run(self, budget: Budget) -> Stats:
        try:
            while budget.take():
                self.step()
                if self.client.consecutive_errors >= MAX_CONSECUTIVE_ERRORS:
                    self.stats.violation(
                        "gave up", f"{MAX_CONSECUTIVE_ERRORS} connection errors in a row"
                    )
                    break
        finally:
            self.client.close()
        return self.stats

    def step(self) -> None:
        action = _weighted(self.rng, MIX)
        if not self.stats.accounts:
            action = "signup"
        elif not self.stats.live and action in {"refresh", "me", "logout"}:
            action = "login"
        getattr(self, action)()

    def signup(self) -> None:
        self.counter += 1
        account = Account(
            username=f"{self.prefix}-{self.counter}@example.com",
            password=f"load {secrets.token_urlsafe(12)} passphrase",
        )
        body = {"username": account.username, "password": account.password}
        status, payload = self.client.send("POST", "/signup", body=body)
        if self.client.expect(status, 201, f"signup {account.username}", payload):
            self.stats.accounts.append(account)
            self.stats.live.append(_session(account, payload))

    def login(self) -> None:
        account = self.rng.choice(self.stats.accounts)
        body = {"username": account.username, "password": account.password}
        status, payload = self.client.send("POST", "/login", body=body)
        if self.client.expect(status, 200, f"login {account.username}", payload):
            self.stats.live.append(_session(account, payload))

    def refresh(self) -> None:
        index = self.rng.randrange(len(self.stats.live))
        session = self.stats.live[index]
        status, payload = self.client.send("POST", "/refresh", token=session.refresh_token)
        if self.client.expect(status, 200, f"refresh of {session.account.username}", payload):
            self.stats.live[index] = _session(session.account, payload)

    def me(self) -> None:
        session = self.rng.choice(self.stats.live)
        status, payload = self.client.send("GET", "/me", token=session.access_token)
        ok = self.client.expect(status, 200, f"/me of {session.account.username}", payload)
        if ok and payload.get("username") != session.account.username:
            self.stats.violation(
                "wrong user", f"/me of {session.account.username} -> {payload.get('username')}"
            )

    def logout(self) -> None:
        session = self.rng.choice(self.stats.live)
        scope = _weighted(self.rng, LOGOUT_SCOPES)
        status, payload = self.client.send(
            "POST", "/logout", token=session.access_token, body={"scope": scope}
        )
        if not self.client.expect(status, 204, f"logout ({scope})", payload):
            return
        account = session.account
        if scope == "local":
            ended = [session]
        elif scope == "others":
            ended = [s for s in self.stats.live if s.account is account and s is not session]
        else:
            ended = [s for s in self.stats.live if s.account is account]
        ended_ids = {id(s) for s in ended}
        self.stats.live = [s for s in self.stats.live if id(s) not in ended_ids]
        self.stats.dead.extend(ended)


# -- verification --------------------------------------------------------------------------------


def _in_parallel(
    base_url: str, stats: Stats, clients: int, phase: str, items: Iterable[Any], work: Callable
) -> None:
    """``work(client, item)`` for every item, on ``clients`` threads, each with its own client;
    requests are reported under ``phase``."""
    items = list(items)
    if not items:
        return
    shards = [items[index::clients] for index in range(clients)]

    def run(shard: list[Any]) -> Stats:
        local = Stats()
        client = Client(base_url, local, phase)
        try:
            for item in shard:
                work(client, item)
        finally:
            client.close()
        return local

    with ThreadPoolExecutor(max_workers=clients) as pool:
        for result in pool.map(run, [shard for shard in shards if shard]):
            stats.merge(result)


def verify_login(client: Client, account: Account) -> None:
    body = {"username": account.username, "password": account.password}
    status, payload = client.send("POST", "/login", body=body)
    client.expect(status, 200, f"created account {account.username} cannot log in", payload)


def verify_dead(client: Client, session: Session) -> None:
    who = session.account.username
    status, payload = client.send("POST", "/refresh", token=session.refresh_token)
    client.expect(status, 401, f"refresh token of a logged-out session of {who}", payload)
    status, payload = client.send("GET", "/me", token=session.access_token)
    client.expect(status, 401, f"access token of a logged-out session of {who}", payload)


def verify_live(client: Client, session: Session) -> None:
    if session.access_expires_at - time.monotonic() < 5:
        return  # expired (or about to) by now: nothing to learn
    status, payload = client.send("GET", "/me", token=session.access_token)
    client.expect(status, 200, f"live session of {session.account.username}", payload)


# -- report --------------------------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


def summarize(stats: Stats, load_stats: Stats, elapsed: float, args: argparse.Namespace) -> dict:
    endpoints = {}
    for name in sorted(stats.latencies):
        values = stats.latencies[name]
        counts = sorted(stats.statuses[name].items(), key=lambda item: str(item[0]))
        endpoints[name] = {
            "requests": len(values),
            "statuses": {str(key): count for key, count in counts},
            "p50_ms": round(percentile(values, 0.50) * 1000, 2),
            "p99_ms": round(percentile(values, 0.99) * 1000, 2),
        }
    statuses: Counter = Counter()
    for counter in stats.statuses.values():
        statuses.update({str(key): count for key, count in counter.items()})
    load_requests = sum(len(values) for values in load_stats.latencies.values())
    return {
        "url": args.url,
        "clients": args.clients,
        "seconds": args.seconds,
        "load_elapsed_s": round(elapsed, 2),
        "load_requests": load_requests,
        "load_rps": round(load_requests / elapsed, 1) if elapsed else 0.0,
        "requests": sum(item["requests"] for item in endpoints.values()),
        "statuses": dict(sorted(statuses.items())),
        "endpoints": endpoints,
        "accounts_created": len(stats.accounts),
        "sessions_logged_out": len(stats.dead),
        "sessions_live": len(stats.live),
        "violations": sum(stats.violation_kinds.values()),
        "violation_kinds": dict(stats.violation_kinds),
        "violation_examples": stats.violations,
    }


def print_summary(summary: dict) -> None:
    print(
        f"authsvc load: {summary['url']}, {summary['clients']} clients, "
        f"{summary['load_elapsed_s']} s: {summary['load_requests']} requests "
        f"({summary['load_rps']}/s), {summary['requests']} with verification"
    )
    print(f"{'endpoint':<28} {'requests':>9} {'p50 ms':>9} {'p99 ms':>9}  statuses")
    for name, item in summary["endpoints"].items():
        statuses = " ".join(f"{key}:{count}" for key, count in item["statuses"].items())
        print(
            f"{name:<28} {item['requests']:>9} {item['p50_ms']:>9.2f} {item['p99_ms']:>9.2f}  "
            f"{statuses}"
        )
    print(f"statuses: {summary['statuses']}")
    print(
        f"verified: {summary['accounts_created']} accounts log in, "
        f"{summary['sessions_logged_out']} logged-out sessions dead, "
        f"{summary['sessions_live']} live sessions alive"
    )
    if summary["violations"]:
        print(f"VIOLATIONS: {summary['violations']} {summary['violation_kinds']}")
        for example in summary["violation_examples"]:
            print(f"  - {example}")
    else:
        print("OK: no violations")


# -- entry point ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="base URL (loopback only)")
    parser.add_argument("--clients", type=int, default=8, help=f"threads, 1-{MAX_CLIENTS}")
    parser.add_argument("--seconds", type=float, default=60, help=f"load time, <= {MAX_SECONDS}")
    parser.add_argument(
        "--max-requests", type=int, default=200_000, help="cap on load requests (all clients)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the action mix")
    parser.add_argument("--summary-json", help="also write the summary to this file")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= MAX_CLIENTS:
        parser.error(f"--clients must be between 1 and {MAX_CLIENTS}")
    if not 0 < args.seconds <= MAX_SECONDS:
        parser.error(f"--seconds must be in (0, {MAX_SECONDS}]")
    if args.max_requests < 1:
        parser.error("--max-requests must be positive")
    try:
        args.url = loopback_url(args.url)
    except UsageError as error:
        parser.error(str(error))
    return args


def reachable(base_url: str) -> bool:
    try:
        return requests.get(f"{base_url}/healthz", timeout=5).status_code == 200
    except requests.RequestException:
        return False


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not reachable(args.url):
        print(
            f"authsvc load: {args.url}/healthz does not answer 200; nothing sent", file=sys.stderr
        )
        return EXIT_VIOLATIONS
    run_id = secrets.token_hex(4)
    budget = Budget(args.seconds, args.max_requests)
    clients = [LoadClient(args.url, index, run_id, args.seed) for index in range(args.clients)]
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=args.clients) as pool:
        results = list(pool.map(lambda client: client.run(budget), clients))
    elapsed = time.monotonic() - started

    load_stats = Stats()
    for result in results:
        load_stats.merge(result)
    stats = Stats()
    stats.merge(load_stats)
    _in_parallel(args.url, stats, args.clients, "accounts", load_stats.accounts, verify_login)
    _in_parallel(args.url, stats, args.clients, "dead", load_stats.dead, verify_dead)
    _in_parallel(args.url, stats, args.clients, "live", load_stats.live, verify_live)
    # The verify threads' merged bookkeeping lists are empty; keep the load's for the report.
    summary = summarize(stats, load_stats, elapsed, args)
    print_summary(summary)
    if args.summary_json:
        with open(args.summary_json, "w") as handle:
            json.dump(summary, handle, indent=2)
    return EXIT_VIOLATIONS if summary["violations"] else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
