"""gunicorn settings, all from the environment (the same file in containers and on a laptop).

WEB_CONCURRENCY     worker processes. Default: 1 without REDIS_URL (the embedded default serves
                    from one process; rate-limit counters live in its memory), else the CPU count.
GUNICORN_THREADS    threads per worker (default 4). argon2 releases the GIL, so threads hash in
                    parallel.
GUNICORN_BIND       address (default 0.0.0.0:$PORT, PORT default 8000).
GUNICORN_TIMEOUT    worker timeout in seconds (default 30); GUNICORN_GRACEFUL_TIMEOUT (default 30);
                    GUNICORN_KEEPALIVE (default 5).
FORWARDED_ALLOW_IPS proxies whose X-Forwarded-Proto gunicorn trusts (default 127.0.0.1). The
                    client address behind proxies is AUTHSVC_TRUSTED_PROXIES' business.
AUTHSVC_METRICS_BIND host:port where the master serves /metrics (Prometheus text summed over
                    every worker), a listener of its own, as Keycloak serves its management port.
                    Unset: no metrics listener (and the app's own /metrics answers only in
                    development).
"""

import contextlib
import ctypes
import gc
import multiprocessing
import os
import sys
import tempfile

_redis = bool(os.environ.get("REDIS_URL"))

bind = os.environ.get("GUNICORN_BIND") or f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY") or (multiprocessing.cpu_count() if _redis else 1))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
worker_class = "gthread"
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
# Heartbeat files on tmpfs: a worker blocked on a slow disk is not mistaken for a hung one.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108
# The app writes one JSON line per request itself; gunicorn's own access log would repeat it.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOGLEVEL", "info")

# The app is loaded once, in the master, before the workers are forked (gc.freeze() in
# when_ready keeps the collector from touching, and so copying, those shared pages): what a
# worker does not share is what it adds itself. post_fork gives each worker its own database and
# Redis connections.
preload_app = True

# Prometheus multiprocess mode: every worker writes its samples to this folder and /metrics sums
# them. It must be set before the app (and prometheus_client) is imported, here in the master.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="authsvc-metrics-")


# glibc's allocator, set here in the master so every forked worker starts with it. argon2
# mallocs its whole memory cost (19 MiB by default) per hash:
# - one arena for the whole worker instead of one per thread: with an arena per thread, each
#   thread that ever hashed kept its own block resident, out of reach of authsvc.security.passwords,
#   which hands freed memory back (malloc_trim) after a quiet second;
# - blocks up to 32 MiB come from the heap, and free() never trims it by itself: otherwise
#   concurrent hashes kept trimming the heap and faulting 19 MiB back in (a few % of login
#   throughput). The quiet-second trim does that job instead.
# Measured in bench/README.md. Not glibc: nothing to do.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
if sys.platform.startswith("linux"):
    with contextlib.suppress(OSError, AttributeError):
        _libc = ctypes.CDLL(None)
        _libc.mallopt(_M_ARENA_MAX, 1)
        _libc.mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024)
        _libc.mallopt(_M_TRIM_THRESHOLD, 512 * 1024 * 1024)


# The app answers 413 to a body over its limit (authsvc.api.body.MAX_BODY_BYTES, 64 KiB) without
# reading it. gunicorn drains at most 64 KiB of an unread body before the next request on the
# connection, and closes the connection when there is more, after a response that already said
# keep-alive: a client reusing it (requests, browsers) saw its next request fail. So a request
# whose body may be left unread past that (longer than the limit, or chunked, of unknown length)
# is answered with Connection: close from the start (RFC 9112 §9.6).
MAX_BODY_BYTES = 64 * 1024


def _may_leave_body_unread(name, value):
    if name == "TRANSFER-ENCODING":
        return "chunked" in value.lower()
    return name == "CONTENT-LENGTH" and (not value.isdigit() or int(value) > MAX_BODY_BYTES)


def pre_request(worker, req):
    if any(_may_leave_body_unread(name, value) for name, value in req.headers):
        req.force_close()


_metrics_server = None


def when_ready(server):
    global _metrics_server
    # The preloaded app's objects move to the permanent generation: the workers' collections
    # never write to (and so never un-share) the pages they live on.
    gc.collect()
    gc.freeze()
    bind_to = os.environ.get("AUTHSVC_METRICS_BIND", "").strip()
    if not bind_to:
        return
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    host, _, port = bind_to.rpartition(":")
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    # A daemon thread of the master: it outlives worker restarts and reads every worker's
    # samples. (It only accepts and reads files; a worker forked meanwhile gets none of its
    # threads, and closes its copy of the listening socket in post_fork.)
    _metrics_server, _thread = start_http_server(
        int(port), addr=host.strip("[]"), registry=registry
    )
    print(f"authsvc: metrics on http://{bind_to}/metrics", file=sys.stderr)


def post_fork(server, worker):
    if _metrics_server is not None:
        _metrics_server.socket.close()
    from authsvc.runtime import reset_after_fork

    reset_after_fork(server.app.wsgi())


def on_starting(server):
    if not _redis:
        mode = "one process" if workers == 1 else f"{workers} processes"
        print(
            f"authsvc: no REDIS_URL: serving from {mode} with {threads} threads; rate-limit "
            "counters in process memory, every token check reads its session from the database",
            file=sys.stderr,
        )
        if workers > 1:
            print(
                "authsvc: WARNING: several worker processes without REDIS_URL: each process "
                "counts rate limits on its own, so every limit is that many times weaker. Set "
                "REDIS_URL, or WEB_CONCURRENCY=1 (and raise GUNICORN_THREADS).",
                file=sys.stderr,
            )


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
