"""gunicorn settings for seqtag: threaded workers, sizes and timeouts from the environment.

Each worker process builds its own app and loads its own models (TensorFlow is not fork-safe, so the
app is not preloaded in the master).
"""

import glob
import os
import tempfile

bind = f"{os.environ.get('SEQTAG_HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"
wsgi_app = "service.wsgi:app"
worker_class = "gthread"
workers = int(os.environ.get("SEQTAG_WORKERS", "1"))
threads = int(os.environ.get("SEQTAG_THREADS", "16"))  # concurrent requests per worker: what the batcher coalesces
timeout = int(os.environ.get("SEQTAG_TIMEOUT", "60"))
graceful_timeout = int(os.environ.get("SEQTAG_GRACEFUL_TIMEOUT", "30"))
keepalive = 5
preload_app = False
# gunicorn's own access log; off by default: the app writes one JSON line per request (SEQTAG_REQUEST_LOG).
accesslog = os.environ.get("SEQTAG_ACCESS_LOG", "") or None  # "-": stdout; "": none

# Dialog sessions kept in one process would scatter across workers: each worker would know only the
# sessions it opened. Several workers need the shared Redis store (or dialog sessions turned off).
_sessions_on = os.environ.get("SEQTAG_DIALOG_SESSIONS", "true").lower() not in ("0", "false", "no", "off")
if workers > 1 and _sessions_on and not os.environ.get("SEQTAG_REDIS_URL"):
    raise SystemExit(f"seqtag: SEQTAG_WORKERS={workers} with dialog sessions kept in process would scatter sessions "
                     "across workers. Set SEQTAG_REDIS_URL=redis://host:6379/0 to share them, use one worker "
                     "(SEQTAG_THREADS gives concurrency), or set SEQTAG_DIALOG_SESSIONS=false for tagging only.")

# Prometheus multiprocess mode: every worker writes its metrics under this directory and /metrics sums
# them. Set before any worker imports prometheus_client; emptied when the server starts.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="seqtag-metrics-")


def on_starting(server):
    for stale in glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], "*.db")):
        os.remove(stale)
    if _sessions_on and os.environ.get("SEQTAG_REDIS_URL"):
        _check_redis(os.environ["SEQTAG_REDIS_URL"])


def _check_redis(url):
    """A wrong or unreachable SEQTAG_REDIS_URL stops the server at start. Later outages do not: workers boot
    without Redis (a worker replaced while it is down must not take tagging down) and answer 503 on dialogs."""
    from urllib.parse import urlsplit

    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5).ping()
    except (redis.RedisError, ValueError) as error:
        where = urlsplit(url)._replace(netloc=urlsplit(url).netloc.rpartition("@")[2]).geturl()  # no password
        raise SystemExit(f"seqtag: the Redis at SEQTAG_REDIS_URL ({where}) does not answer: {error}") from None


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # its live gauges leave the scrape; its counters stay
