"""gunicorn settings for seqtag: threaded workers, sizes and timeouts from the environment.

Each worker process builds its own app and loads its own models (TensorFlow is not fork-safe, so the
app is not preloaded in the master).
"""

import os

bind = f"{os.environ.get('SEQTAG_HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"
wsgi_app = "service.wsgi:app"
worker_class = "gthread"
workers = int(os.environ.get("SEQTAG_WORKERS", "1"))
threads = int(os.environ.get("SEQTAG_THREADS", "16"))  # concurrent requests per worker: what the batcher coalesces
timeout = int(os.environ.get("SEQTAG_TIMEOUT", "60"))
graceful_timeout = int(os.environ.get("SEQTAG_GRACEFUL_TIMEOUT", "30"))
keepalive = 5
preload_app = False
accesslog = os.environ.get("SEQTAG_ACCESS_LOG", "-") or None  # "-": stdout; "": none
