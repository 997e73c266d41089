"""The versions every worker of every host has loaded, shared through the sessions' Redis: a rolling upgrade's guard.

Hosts behind a load balancer each load new model versions from their own models directory, one host after another
during a rolling upgrade. A dialog session keeps the version it started with, and its turns land on any host; a
host that had not loaded that version yet would have to refuse them (409 ``version_unloaded``). So a new session
starts on a version only once it is **safe**: every live worker of every host has it loaded. Until then new sessions
start on the newest version they all have, and once the last host has loaded the new one, new sessions get it.
Live sessions finish on their own version on every host while ``SEQTAG_KEEP_DIALOG_VERSIONS`` (2) keeps it loaded.

Each worker writes what it has loaded to ``seqtag:fleet:<host>:<pid>`` after every scan of its models directory
(JSON: ``{"loaded": {model: [versions]}, "api_keys": fingerprint}``), with a TTL of three poll intervals (at least
3 s): a worker that dies stops holding its fleet back once its record expires. Without Redis (one host) there is
no fleet: new sessions get the serving version, as before.

The same records show settings drift. API keys are each host's own settings (``SEQTAG_API_KEYS``,
``SEQTAG_API_KEY_LIMITS``), and hosts that disagree answer one request 200 on one host and 401 on the next. Each
record carries a fingerprint of its worker's keys and per-key limits (``ApiKeys.fingerprint``: digests of digests,
never a key); ``api_key_configs`` counts the distinct ones among live workers, ``/metrics`` shows the count
(``seqtag_fleet_api_key_configs``, 1 when every host agrees) and the poller logs a warning when it goes above 1.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time

logger = logging.getLogger(__name__)

PREFIX = "seqtag:fleet:"


class Fleet:
    def __init__(self, client, poll_interval_seconds: float, cache_seconds: float = 1.0, api_keys: str = ""):
        """``api_keys``: this worker's ``ApiKeys.fingerprint``, compared with the other workers'."""
        self.client = client
        self.api_keys = api_keys
        self._configs_seen = 1  # distinct key configurations at the last publish (a warning when it changes)
        self.key = f"{PREFIX}{socket.gethostname()}:{os.getpid()}"
        self.ttl_ms = int(1000 * max(3.0, 3 * poll_interval_seconds))
        self.cache_seconds = cache_seconds  # how long a worker reuses what it read of the others
        self._read: tuple[float, list[dict]] | None = None
        self._lock = threading.Lock()

    def publish(self, loaded: dict[str, list[int]]) -> None:
        """This worker's loaded versions, by model (a failure is logged: the records then age out, never lie)."""
        try:
            self.client.set(self.key, json.dumps({"loaded": loaded, "api_keys": self.api_keys}), px=self.ttl_ms)
        except Exception as error:  # Redis away: the dialog routes say so; the poller must go on
            logger.warning("could not publish this worker's loaded versions to Redis: %s", error)
            return
        configs = self.api_key_configs()
        if configs is not None and configs != self._configs_seen:
            if configs > 1:
                logger.warning("the fleet's live workers have %d different API key configurations (SEQTAG_API_KEYS, "
                               "SEQTAG_API_KEY_LIMITS): a request may pass on one host and get 401 on another", configs)
            else:
                logger.info("the fleet's live workers agree on their API keys again")
            self._configs_seen = configs

    def withdraw(self) -> None:
        """A worker that stops takes its record with it (one that dies lets it expire)."""
        try:
            self.client.delete(self.key)
        except Exception as error:
            logger.warning("could not withdraw this worker's record from Redis: %s", error)

    def _records(self) -> list[dict]:
        now = time.monotonic()
        with self._lock:
            if self._read is not None and now - self._read[0] < self.cache_seconds:
                return self._read[1]
        keys = list(self.client.scan_iter(match=f"{PREFIX}*", count=1000))
        records = [json.loads(value) for value in self.client.mget(keys) if value] if keys else []
        # A record of a worker from before the keys' fingerprint was {model: [versions]} (a rolling upgrade of
        # seqtag itself): read as such, with no fingerprint.
        records = [record if "loaded" in record else {"loaded": record} for record in records]
        with self._lock:
            self._read = (now, records)
        return records

    def shared_versions(self, name: str) -> set[int] | None:
        """The versions of ``name`` every live worker has loaded; None when no worker has published any."""
        try:
            records = self._records()
        except Exception as error:
            logger.warning("could not read the fleet's loaded versions from Redis: %s", error)
            return None
        if not records:
            return None
        shared = None
        for record in records:
            versions = set(record["loaded"].get(name, []))
            shared = versions if shared is None else shared & versions
        return shared

    def api_key_configs(self) -> int | None:
        """How many different API key configurations the live workers have (1: every host agrees); None when the
        records cannot be read."""
        try:
            records = self._records()
        except Exception as error:
            logger.warning("could not read the fleet's records from Redis: %s", error)
            return None
        return len({record["api_keys"] for record in records if "api_keys" in record} | {self.api_keys})
