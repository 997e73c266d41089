"""Service settings: defaults <- environment (``SEQTAG_*``) <- a mapping given to ``create_app``.

Each field's environment variable is ``SEQTAG_`` + its name in upper case, e.g. ``SEQTAG_MODELS_DIR``,
``SEQTAG_MAX_BATCH_SIZE``. ``SEQTAG_MODEL_VERSIONS="pos=1,dialog-act=2"`` pins versions (rollback).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

ENV_PREFIX = "SEQTAG_"


@dataclass
class ServiceSettings:
    models_dir: str = "models"  # <models_dir>/<name>/<version>/
    model_versions: dict[str, int] = field(default_factory=dict)  # pins: name -> version
    # Newest versions of a tagger kept loaded: 1, as TF Serving's default policy, holds the serving version alone (a
    # pin rolls back); 2 also keeps the previous one answering ?version=N. Older ones answer ?version=N with a 404.
    keep_versions: int = 1
    # Of a dialog model: 2, so that live sessions finish on the version they started with after a new one arrives
    # (1: they get a 409 and must reset)
    keep_dialog_versions: int = 2
    poll_interval_seconds: float = 5.0  # how often to look for new versions; 0: never (tests refresh by hand)
    warmup: bool = True  # a version must tag a warm-up sentence before it serves
    batching: bool = True  # coalesce concurrent requests into one model call
    max_batch_size: int = 64  # sentences per model call
    batch_timeout_ms: float = 0.0  # longest wait for company; 0: take what queued while the model was busy
    max_body_bytes: int = 1 << 20  # 413 above this
    max_sentences: int = 128  # per request
    max_tokens_per_sentence: int = 200
    max_token_chars: int = 1000  # EWT has 100+ character URLs; the model reads the first max_word_length
    max_text_chars: int = 5000  # per raw text
    max_top_k: int = 5
    dialog_sessions: bool = True  # /v1/dialogs; off: tagging only (then any number of workers without Redis)
    redis_url: str = ""  # dialog sessions in Redis (any number of workers and hosts); "": in this process
    max_sessions: int = 10000  # in-process store: the least recently active session goes beyond this
    session_ttl_seconds: float = 3600.0  # a session idle this long is gone (404)
    redis_timeout_seconds: float = 2.0  # a Redis call that takes longer fails: the dialog routes answer 503
    # Registered service schemas (PUT /v1/services/<name>) when there is no Redis: one <name>.json each, read by
    # every worker of this host. "": $XDG_STATE_HOME/seqtag/services (~/.local/state/seqtag/services), filled
    # in by load(): state that outlives the process, and not inside the checkout or the models directory.
    services_dir: str = ""
    # "name:key,name2:key2": every route but health and docs needs "Authorization: Bearer <key>" (service.auth)
    api_keys: str = field(default="", repr=False)
    max_sessions_per_key: int = 0  # live dialog sessions one key may hold (0: no limit beyond max_sessions)
    # per-key limits over the ones above, JSON: {"batch": {"max_body_bytes": 8388608, "max_sentences": 1024}}
    api_key_limits: str = ""
    request_log: bool = True  # one JSON line per request (logger seqtag.requests), X-Request-Id header
    # "onnx": each version also runs as ONNX Runtime's fused LSTM kernels, built from its weights and checked
    # against its SavedModel when it loads (a disagreement rejects it); "tensorflow": the SavedModel only.
    runtime: str = "onnx"
    # Models with a pretrained encoder (dialog-act/3, the schema-guided slots/2), on the onnx runtime: "int8" runs the
    # encoder's dense layers in int8, each turn in a call of its own, checked against the float encoder when the
    # version loads (a model that fails runs in float32, with a warning); "float32" turns it off. SwDA val: accuracy
    # 0.8044 against 0.8041; SGD dev slots: span F1 0.9407 against 0.9411 (docs/speed.md, docs/services.md).
    encoder_precision: str = "int8"
    # Keep each version's checked fast path on disk ($SEQTAG_CACHE_DIR, ~/.cache/seqtag): a worker then serves it
    # without importing TensorFlow (690 MiB), its check run against the stored SavedModel answers; a version the
    # cache lacks is checked in a child process first (service.fast_path_check). Off: every worker loads TensorFlow.
    fast_path_cache: bool = True
    cached_turns: int = 4096  # turn vectors an encoder model keeps by their word pieces (1.5 KB each); 0: none
    tf_inter_op_threads: int = 2  # TensorFlow ops run at once (a BiLSTM's two directions)
    tf_intra_op_threads: int = 0  # threads per op; 0: half the usable cores

    @classmethod
    def load(cls, overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> "ServiceSettings":
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw is not None and raw != "":
                values[f.name] = _parse(f.name, raw, cls.__dataclass_fields__[f.name].type)
        overrides = dict(overrides or {})
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        settings = cls(**{**values, **overrides})
        if not settings.services_dir:
            settings.services_dir = default_services_dir(environ)
        if settings.runtime not in ("onnx", "tensorflow"):
            raise ValueError(f"{ENV_PREFIX}RUNTIME={settings.runtime!r}: one of onnx, tensorflow")
        if settings.encoder_precision not in ("int8", "float32"):
            raise ValueError(f"{ENV_PREFIX}ENCODER_PRECISION={settings.encoder_precision!r}: one of int8, float32")
        if settings.keep_versions < 1 or settings.keep_dialog_versions < 1:
            raise ValueError(f"{ENV_PREFIX}KEEP_VERSIONS and {ENV_PREFIX}KEEP_DIALOG_VERSIONS: 1 or more")
        if settings.cached_turns < 0:
            raise ValueError(f"{ENV_PREFIX}CACHED_TURNS={settings.cached_turns}: 0 or more")
        return settings


def default_services_dir(environ: Mapping[str, str]) -> str:
    """``$XDG_STATE_HOME/seqtag/services``; without it (or with a relative one, which the XDG specification
    says to ignore) ``~/.local/state/seqtag/services``."""
    state = environ.get("XDG_STATE_HOME", "")
    if not os.path.isabs(state):
        state = os.path.join(environ.get("HOME") or os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "seqtag", "services")


def _parse(name: str, raw: str, kind: Any) -> Any:
    kind = str(kind)
    try:
        if "dict" in kind:  # "pos=1,dialog-act=2"
            pins = {}
            for item in filter(None, (part.strip() for part in raw.split(","))):
                model, _, version = item.partition("=")
                pins[model.strip()] = int(version)
            return pins
        if kind == "bool":
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(raw)
            return raw.lower() in ("1", "true", "yes", "on")
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        return raw
    except ValueError as error:
        raise ValueError(f"{ENV_PREFIX}{name.upper()}={raw!r}: not a valid {kind}") from error
