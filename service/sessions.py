"""Dialog sessions: each conversation's recurrent state, kept between turns, in-process or in Redis.

A session holds what the model needs to go on: the turn LSTM's (h, c), the model version it started
with, the turn count and, for action models, the actions that stand for "what the system did last".
It is stored as bytes (a small JSON header, then h and c as float32), with an idle TTL.

``SessionStore.update(id, change)`` applies one turn atomically: ``change`` gets the current state and
returns the new one; if it raises, the stored state is left as it was. Two turns sent to one session at
once are applied one after the other: the in-process store holds a per-session lock, the Redis store
does an optimistic check-and-set (WATCH/MULTI/EXEC) and runs ``change`` again on the newer state if
another writer got there first.

``SessionStore.create(state, max_owned=N)`` counts the owner's live sessions and writes the new one in one
atomic step (the in-process store under its lock, Redis in one Lua script), so sessions created at the same
time by any number of threads, workers or hosts never take an API key past its limit.

When Redis cannot be reached (stopped, restarting, still loading its append-only file), every store call
raises ``SessionStoreUnavailable`` within about ``timeout_seconds``, and the dialog routes answer 503:
nothing was written, so the client sends the same turn again later. Redis's own persistence (AOF) keeps
the sessions across its restart.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import struct
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

logger = logging.getLogger(__name__)

_HEADER = struct.Struct("<I")  # length of the JSON header


class SessionNotFound(KeyError):
    pass


class SessionStoreUnavailable(RuntimeError):
    """The session store cannot be reached now; nothing was changed."""


class SessionBusy(RuntimeError):
    """Too many turns raced for one session; nothing was changed."""


class SessionLimitReached(RuntimeError):
    """The session's owner already holds its limit of live sessions; nothing was written."""

    def __init__(self, owner: str, limit: int):
        super().__init__(f"{owner!r} holds {limit} live sessions, its limit")
        self.owner = owner
        self.limit = limit


def new_session_id() -> str:
    return secrets.token_urlsafe(24)  # 192 random bits


@dataclass
class SessionState:
    session_id: str
    model: str
    version: int
    state_h: np.ndarray  # float32[H]
    state_c: np.ndarray  # float32[H]
    turn: int = 0
    last_actions: list[str] | None = None  # action models: the previous actions fed to the next turn
    created: float = field(default_factory=time.time)
    last_active: float = field(default_factory=time.time)
    owner: str = ""  # the name of the API key that opened it ("" when the service has no keys)
    # The last turn taken, so that the same request sent again (a retry after a timeout or a 503) gets the
    # same answer without being applied twice: a digest of its input and its probabilities float32[L].
    last_request: str = ""
    last_probabilities: np.ndarray | None = None
    slots: str = ""  # the span model whose slots each turn also answers ("" for none), and its version
    slots_version: int = 0

    def to_bytes(self) -> bytes:
        last = self.last_probabilities
        header = json.dumps({"id": self.session_id, "model": self.model, "version": self.version, "turn": self.turn,
                             "last_actions": self.last_actions, "created": self.created,
                             "last_active": self.last_active, "owner": self.owner,
                             "units": int(self.state_h.shape[0]), "last_request": self.last_request,
                             "slots": self.slots, "slots_version": self.slots_version,
                             "n_last": 0 if last is None else int(last.shape[0])}).encode()
        return (_HEADER.pack(len(header)) + header + self.state_h.astype("<f4").tobytes()
                + self.state_c.astype("<f4").tobytes() + (b"" if last is None else last.astype("<f4").tobytes()))

    @classmethod
    def from_bytes(cls, data: bytes) -> "SessionState":
        (length,) = _HEADER.unpack_from(data)
        header = json.loads(data[_HEADER.size:_HEADER.size + length])
        units, n_last = header["units"], header.get("n_last", 0)
        arrays = np.frombuffer(data, dtype="<f4", offset=_HEADER.size + length,
                               count=2 * units + n_last).astype(np.float32)
        return cls(header["id"], header["model"], header["version"], arrays[:units].copy(),
                   arrays[units:2 * units].copy(), header["turn"], header["last_actions"], header["created"],
                   header["last_active"], header.get("owner", ""), header.get("last_request", ""),
                   arrays[2 * units:].copy() if n_last else None, header.get("slots", ""),
                   header.get("slots_version", 0))

    def reset(self) -> "SessionState":
        return replace(self, state_h=np.zeros_like(self.state_h), state_c=np.zeros_like(self.state_c), turn=0,
                       last_actions=None, last_active=time.time(), last_request="", last_probabilities=None)


Change = Callable[[SessionState], SessionState]


class SessionStore:
    """One interface, two backends."""

    backend = "abstract"

    def create(self, state: SessionState, max_owned: int = 0) -> None:
        """Store a new session. With ``max_owned`` > 0 and an owner: if the owner already holds that many live
        sessions, raise ``SessionLimitReached`` and write nothing; the count and the write are one atomic step."""
        raise NotImplementedError

    def get(self, session_id: str) -> SessionState:
        """The state, or SessionNotFound (unknown or expired)."""
        raise NotImplementedError

    def update(self, session_id: str, change: Change) -> SessionState:
        raise NotImplementedError

    def delete(self, session_id: str) -> bool:
        raise NotImplementedError

    def count(self) -> int:
        raise NotImplementedError

    def count_owned(self, owner: str) -> int:
        """Live sessions opened by ``owner`` (an API key's name)."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class InProcessSessionStore(SessionStore):
    """At most ``max_sessions`` (least recently active evicted), idle ones expire after ``ttl_seconds``.

    Lives in one process: gunicorn must then run one worker (threads for concurrency).
    """

    backend = "memory"

    def __init__(self, max_sessions: int, ttl_seconds: float):
        self.max_sessions = max_sessions
        self.ttl_seconds = ttl_seconds
        self._sessions: OrderedDict[str, bytes] = OrderedDict()  # least recently active first
        self._locks: dict[str, threading.Lock] = {}
        self._owners: dict[str, str] = {}  # session id -> owner
        self._lock = threading.Lock()

    def _expire(self, now: float) -> None:
        # Sessions are in order of activity, so the expired ones are at the front.
        while self._sessions:
            session_id, data = next(iter(self._sessions.items()))
            if now - SessionState.from_bytes(data).last_active <= self.ttl_seconds:
                break
            self._drop(session_id)

    def _drop(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)
        self._locks.pop(session_id, None)
        self._owners.pop(session_id, None)

    def create(self, state: SessionState, max_owned: int = 0) -> None:
        with self._lock:
            self._expire(time.time())
            if max_owned > 0 and state.owner and self._count_owned(state.owner) >= max_owned:
                raise SessionLimitReached(state.owner, max_owned)
            while len(self._sessions) >= self.max_sessions:
                self._drop(next(iter(self._sessions)))
                logger.info("session store full: evicted the least recently active session")
            self._sessions[state.session_id] = state.to_bytes()
            self._locks[state.session_id] = threading.Lock()
            self._owners[state.session_id] = state.owner

    def _lookup(self, session_id: str) -> tuple[SessionState, threading.Lock]:
        with self._lock:
            self._expire(time.time())
            data, lock = self._sessions.get(session_id), self._locks.get(session_id)
            if data is None or lock is None:
                raise SessionNotFound(session_id)
            return SessionState.from_bytes(data), lock

    def get(self, session_id: str) -> SessionState:
        return self._lookup(session_id)[0]

    def update(self, session_id: str, change: Change) -> SessionState:
        _, session_lock = self._lookup(session_id)
        with session_lock:  # one turn at a time per session; other sessions go on
            current = self.get(session_id)  # re-read under the lock: the previous turn's result
            new = change(current)
            with self._lock:
                if session_id not in self._sessions:  # deleted meanwhile
                    raise SessionNotFound(session_id)
                self._sessions[session_id] = new.to_bytes()
                self._sessions.move_to_end(session_id)
            return new

    def delete(self, session_id: str) -> bool:
        with self._lock:
            found = session_id in self._sessions
            self._drop(session_id)
            return found

    def count(self) -> int:
        with self._lock:
            self._expire(time.time())
            return len(self._sessions)

    def count_owned(self, owner: str) -> int:
        with self._lock:
            self._expire(time.time())
            return self._count_owned(owner)

    def _count_owned(self, owner: str) -> int:  # under self._lock
        return sum(1 for o in self._owners.values() if o == owner)


class RedisSessionStore(SessionStore):
    """Sessions shared by every worker and host that reach one Redis; each key expires when idle."""

    backend = "redis"
    PREFIX = "seqtag:session:"

    def __init__(self, url: str, ttl_seconds: float, max_retries: int = 50, timeout_seconds: float = 2.0,
                 check: bool = True):
        import redis
        from redis.backoff import ExponentialWithJitterBackoff
        from redis.retry import Retry

        # A few quick retries ride out a dropped connection (Redis restarted: the pool's sockets are dead);
        # beyond that the request fails fast with 503 rather than holding a worker thread for seconds.
        self.client = redis.Redis.from_url(url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds,
                                           retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.1), 3))
        self.ttl_ms = int(ttl_seconds * 1000)
        self.max_retries = max_retries
        self._create_script = self.client.register_script(self._CREATE)  # EVALSHA, loaded again if Redis lost it
        if check:
            self.check()

    def check(self) -> None:
        """Raise ``SessionStoreUnavailable`` unless Redis answers now."""
        with self._available():
            self.client.ping()

    @contextlib.contextmanager
    def _available(self):
        import redis

        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as error:  # BusyLoadingError: still reading its AOF
            raise SessionStoreUnavailable(f"the session store (Redis) is unavailable: {type(error).__name__}: "
                                          f"{str(error)[:200]}") from error

    OWNER_PREFIX = "seqtag:owner:"  # a sorted set per API key: its session ids, scored by expiry time (ms)

    def _key(self, session_id: str) -> str:
        return self.PREFIX + session_id

    def _owned(self, pipe, state: SessionState) -> None:
        """Queue on ``pipe``: ``state``'s session counts for its owner until it expires."""
        if state.owner:
            owner_key = self.OWNER_PREFIX + state.owner
            pipe.zadd(owner_key, {state.session_id: int(time.time() * 1000) + self.ttl_ms})
            pipe.pexpire(owner_key, self.ttl_ms)

    # One script, so Redis runs it atomically: the owner's expired entries leave its set, its live sessions are
    # counted, and only below the limit are the session and its owner's entry written. (Counting first and
    # writing after, as two calls, let two creates racing at the limit both through.)
    # KEYS: session key, owner key. ARGV: session bytes, ttl ms, now ms, expiry ms, limit (0: none), session
    # id, "1" if the session has an owner.
    _CREATE = """
    local owned = ARGV[7] == '1'
    if owned then
        redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])
        local limit = tonumber(ARGV[5])
        if limit > 0 and redis.call('ZCARD', KEYS[2]) >= limit then
            return 0
        end
    end
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    if owned then
        redis.call('ZADD', KEYS[2], ARGV[4], ARGV[6])
        redis.call('PEXPIRE', KEYS[2], ARGV[2])
    end
    return 1
    """

    def create(self, state: SessionState, max_owned: int = 0) -> None:
        now_ms = int(time.time() * 1000)
        with self._available():
            created = self._create_script(
                keys=[self._key(state.session_id), self.OWNER_PREFIX + state.owner],
                args=[state.to_bytes(), self.ttl_ms, now_ms, now_ms + self.ttl_ms, max(max_owned, 0),
                      state.session_id, "1" if state.owner else "0"])
        if not created:
            raise SessionLimitReached(state.owner, max_owned)

    def get(self, session_id: str) -> SessionState:
        with self._available():
            data = self.client.get(self._key(session_id))
        if data is None:
            raise SessionNotFound(session_id)
        return SessionState.from_bytes(data)

    def update(self, session_id: str, change: Change) -> SessionState:
        import redis

        key = self._key(session_id)
        for attempt in range(self.max_retries):
            with self._available(), self.client.pipeline() as pipe:
                try:
                    pipe.watch(key)
                    data = pipe.get(key)
                    if data is None:
                        raise SessionNotFound(session_id)
                    new = change(SessionState.from_bytes(data))  # may raise: nothing is written
                    pipe.multi()
                    pipe.set(key, new.to_bytes(), px=self.ttl_ms)
                    self._owned(pipe, new)
                    pipe.execute()  # fails if the key changed since WATCH
                    return new
                except redis.WatchError:
                    time.sleep(min(0.001 * 2 ** attempt, 0.05) * (0.5 + secrets.randbelow(1000) / 1000))
        raise SessionBusy(f"session {session_id}: too many turns at once, gave up after {self.max_retries} tries")

    def delete(self, session_id: str) -> bool:
        with self._available():
            data = self.client.getdel(self._key(session_id))
            if data is None:
                return False
            owner = SessionState.from_bytes(data).owner
            if owner:
                self.client.zrem(self.OWNER_PREFIX + owner, session_id)
        return True

    def count(self) -> int:
        with self._available():
            return sum(1 for _ in self.client.scan_iter(match=self.PREFIX + "*", count=1000))

    def count_owned(self, owner: str) -> int:
        owner_key = self.OWNER_PREFIX + owner
        with self._available(), self.client.pipeline() as pipe:
            pipe.zremrangebyscore(owner_key, "-inf", int(time.time() * 1000))  # expired sessions leave the count
            pipe.zcard(owner_key)
            return int(pipe.execute()[1])

    def close(self) -> None:
        self.client.close()
