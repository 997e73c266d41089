"""The model registry: which model versions are loaded and which one serves, with hot reload.

TF Serving's layout and policy: ``<models_dir>/<name>/<integer version>/``; the highest version serves
unless a pin says otherwise; the newest ``keep_versions`` of a tagger stay loaded (1 by default, as TF Serving; 2
lets ``?version=N`` roll back by request), and ``keep_dialog_versions`` of a dialog model (2: live sessions finish
their conversations on the version they started with).
A poller looks for new versions. A new version is loaded only once its files have stopped changing,
then must answer a warm-up request; if it fails either step it is rejected (logged, shown in the status)
and the serving version stays. It is tried again if its files change (a copy that was still running).
The swap is one reference assignment: a request holds the version it started with until it ends.
"""

from __future__ import annotations

import fcntl
import json
import logging
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from service import metrics
from service.batcher import MicroBatcher
from service.settings import ServiceSettings
from training.common import artifacts, fast_cache
from training.dialog.saved_dialog import DialogTurnInput, SavedDialogModel
from training.tagger.saved_tagger import SavedTagger, TaggedTokens

logger = logging.getLogger(__name__)

MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # also the URL converter's pattern
WARMUP_SENTENCE = ["This", "is", "a", "warm-up", "sentence", "."]
WARMUP_TURN = ["Hello", ",", "how", "are", "you", "?"]
SUPPORTED_KINDS = ("tagger", "dialog")
CHILD_CHECK_SECONDS = 900  # a version's fast-path check in a child process (TensorFlow's import and the SavedModel)


def incomplete_saved_model(directory: Path) -> str | None:
    """Why ``directory`` cannot be a whole SavedModel, from its file names alone (a copy still running), or None:
    such a version is rejected without a child process importing TensorFlow to find out."""
    for part in ("saved_model.pb", "variables/variables.index"):
        if not (directory / part).is_file():
            return f"OSError: an incomplete SavedModel: no {part} in {directory} (a copy still running?)"
    if not any((directory / "variables").glob("variables.data-*")):
        return f"OSError: an incomplete SavedModel: no variables/variables.data-* in {directory} (a copy still running?)"
    return None


class CheckedInChild(Exception):
    """A version the fast-path check in a child process rejected; its message is the child's reason."""


class ModelLookupError(LookupError):
    """No such model, or no such loaded version; ``code`` says which."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass
class StepRequest:
    """One session's turn and its state; the unit the step batcher stacks across sessions."""

    turn: DialogTurnInput
    state_h: np.ndarray  # float32[H]
    state_c: np.ndarray
    turn_vector: np.ndarray | None = None  # an encoder model's vector of the turn [hidden], encoded before batching

    def __len__(self) -> int:  # the batcher sorts by length: turns of similar length pad little
        return len(self.turn.tokens)


@dataclass
class SpanRequest:
    """A sentence for a span model, with its condition (an SGD service, or None); what its batcher stacks."""

    tokens: list[str]
    condition: str | None

    def __len__(self) -> int:
        return len(self.tokens)


def span_batch(tagger: SavedTagger, requests: list[SpanRequest]) -> list[TaggedTokens]:
    return tagger.tag([r.tokens for r in requests], conditions=[r.condition for r in requests])


@dataclass
class StepResult:
    probabilities: np.ndarray  # float32[L]
    state_h: np.ndarray
    state_c: np.ndarray


def step_batch(model: SavedDialogModel, requests: list[StepRequest]) -> list[StepResult]:
    """Many sessions' turns through one ``step`` call: states stacked in, split out."""
    vectors = [r.turn_vector for r in requests]
    outputs = model.step([r.turn for r in requests], np.stack([r.state_h for r in requests]),
                         np.stack([r.state_c for r in requests]),
                         turn_vectors=None if any(v is None for v in vectors) else np.stack(vectors))
    return [StepResult(outputs["probabilities"][i], outputs["state_h"][i], outputs["state_c"][i])
            for i in range(len(requests))]


@dataclass
class ModelVersion:
    """One loaded, warmed-up version. Taggers ``tag``, dialog models ``step``; both go through a
    micro-batcher when batching is on (a dialog model's batches gather turns of different sessions)."""

    name: str
    version: int
    directory: Path
    metadata: dict[str, Any]
    tagger: SavedTagger | None
    batcher: MicroBatcher | None
    dialog: SavedDialogModel | None = None
    loaded_at: float = field(default_factory=time.time)

    def step(self, requests: list[StepRequest]) -> list[StepResult]:
        if self.batcher is not None:
            # An encoder model's turns are encoded here, in the request's thread, so that the cores encode turns side
            # by side (ONNX Runtime lets go of the interpreter lock), and the batcher steps only the recurrent part
            # of many sessions at once: encoded on the batcher's one thread, 64 sessions served 511 turns/s against
            # 578 with no batching at all (docs/speed.md).
            for request in requests:
                if request.turn_vector is None:
                    request.turn_vector = self.dialog.encode_turn(request.turn)
            return self.batcher.submit(requests)
        metrics.observe_batch(self.name, len(requests))
        return step_batch(self.dialog, requests)

    @property
    def kind(self) -> str:
        return self.metadata.get("kind", "tagger")

    def runtime_status(self) -> dict[str, Any]:
        """What runs this version (``/v1/models/<name>``): the runtime, the precision, an encoder's turn cache."""
        reader = self.tagger if self.tagger is not None else self.dialog
        status: dict[str, Any] = {"runtime": reader.runtime, "precision": reader.precision}
        if reader.runtime == "onnx":  # checked here against the SavedModel, or against its answers the cache kept
            status["fast_path_checked_against"] = "cached_answers" if "cache" in (reader.fast_check or {}) else "saved_model"
        cache = getattr(getattr(self.dialog, "fast", None), "vectors", None)
        if cache is not None:
            status["turn_vector_cache"] = cache.stats()
        return status

    @property
    def labels(self) -> list[str]:
        return list(self.metadata.get("labels", []))

    @property
    def tokenizer(self):
        """What reads raw text for this version: the tokenizer its metadata names (``tokenizer_for``)."""
        return self.tagger.tokenizer if self.tagger is not None else self.dialog.tokenizer

    @property
    def spans(self) -> bool:
        """A span model: it tags with a condition and answers spans."""
        return self.tagger is not None and self.tagger.spans

    @property
    def schema_guided(self) -> bool:
        """A model that reads a service's schema (``training.schema_guided``): any registered service, by its names."""
        return bool(getattr(self.tagger, "schema_guided", False))

    @property
    def conditions(self) -> set[str]:
        """The services a span model trained on by name knows (it reads no schema: it knows no others)."""
        return set(self.metadata.get("conditions") or [])

    @property
    def shipped_schemas(self) -> dict:
        """The schemas of the services a schema-guided version was trained with (its ``schemas.json``)."""
        return self.tagger.shipped if self.schema_guided else {}

    def encode_service(self, schema):
        """A schema's slots through this version's encoder (``ServiceCatalog.encoding`` keeps the result)."""
        return self.tagger.encode_service(schema)

    def tag(self, sentences: list[list[str]], condition: str | None = None) -> list[TaggedTokens]:
        items = [SpanRequest(s, condition) for s in sentences] if self.spans else sentences
        if self.batcher is not None:
            return self.batcher.submit(items)
        metrics.observe_batch(self.name, len(sentences))
        return span_batch(self.tagger, items) if self.spans else self.tagger.tag(sentences)

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()


@dataclass
class _Rejection:
    fingerprint: tuple
    reason: str
    at: float = field(default_factory=time.time)


@dataclass
class _ModelEntry:
    loaded: dict[int, ModelVersion] = field(default_factory=dict)
    rejected: dict[int, _Rejection] = field(default_factory=dict)
    serving: ModelVersion | None = None


def directory_fingerprint(directory: Path) -> tuple:
    """(path, size, mtime) of every file: changes while a copy is still being written."""
    entries = []
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            stat = path.stat()
            entries.append((str(path.relative_to(directory)), stat.st_size, stat.st_mtime_ns))
    return tuple(entries)


class ModelRegistry:
    def __init__(self, settings: ServiceSettings, settle_seconds: float = 0.5):
        self.settings = settings
        self.models_dir = Path(settings.models_dir)
        self.settle_seconds = settle_seconds  # a new version's files must be unchanged this long
        self._entries: dict[str, _ModelEntry] = {}
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        # directory -> (its fingerprint, the reason) of versions the child process's check rejected (_check_in_child)
        self._child_rejections: dict[str, tuple[tuple, str]] = {}
        self.fleet = None  # service.fleet.Fleet when sessions are in Redis: the versions every worker has loaded

    def init_app(self, app) -> None:
        app.extensions["seqtag.registry"] = self
        self.refresh(initial=True)
        if self.settings.poll_interval_seconds > 0:
            self.start_polling()

    # --- lookups (request threads) ---

    def get(self, name: str, version: int | None = None) -> ModelVersion:
        entry = self._entries.get(name)
        if entry is None:
            raise ModelLookupError("model_not_found", f"no model named {name!r}")
        if version is None:
            if entry.serving is None:
                raise ModelLookupError("model_unavailable", f"model {name!r} has no version that loaded")
            return entry.serving
        loaded = entry.loaded.get(version)
        if loaded is None:
            raise ModelLookupError("version_not_found", f"model {name!r} has no loaded version {version} "
                                                        f"(loaded: {sorted(entry.loaded) or 'none'})")
        return loaded

    def session_version(self, name: str) -> int | None:
        """The version a new dialog session of ``name`` starts on: the serving one, or, in a fleet
        (``service.fleet``), the newest one every live worker of every host has loaded (None: the serving one)."""
        entry = self._entries.get(name)
        if self.fleet is None or entry is None or entry.serving is None:
            return None
        shared = self.fleet.shared_versions(name)
        if shared is None:
            return None
        safe = [version for version in entry.loaded if version in shared and version <= entry.serving.version]
        return max(safe) if safe else None

    def attach_fleet(self, fleet) -> None:
        self.fleet = fleet
        self._publish()

    def _publish(self) -> None:
        if self.fleet is not None:
            self.fleet.publish({name: sorted(entry.loaded) for name, entry in self._entries.items()})

    def names(self) -> list[str]:
        return sorted(self._entries)

    def ready(self) -> tuple[bool, list[str]]:
        missing = [name for name, entry in sorted(self._entries.items()) if entry.serving is None]
        return (bool(self._entries) and not missing), missing

    def status(self, name: str) -> dict[str, Any]:
        entry = self._entries.get(name)
        if entry is None:
            raise ModelLookupError("model_not_found", f"no model named {name!r}")
        serving = entry.serving
        versions = [{"version": v, "state": "AVAILABLE", "loaded_at": m.loaded_at} for v, m in entry.loaded.items()]
        versions += [{"version": v, "state": "REJECTED", "error": r.reason, "rejected_at": r.at}
                     for v, r in entry.rejected.items() if v not in entry.loaded]
        metrics = (serving.metadata.get("metrics", {}).get("dev", {}) if serving else {})
        return {
            "name": name,
            "kind": serving.kind if serving else None,
            "task": serving.metadata.get("task") if serving else None,
            "state": "AVAILABLE" if serving else "UNAVAILABLE",
            "serving_version": serving.version if serving else None,
            "pinned_version": self.settings.model_versions.get(name),
            **(serving.runtime_status() if serving else {}),
            "versions": sorted(versions, key=lambda v: v["version"], reverse=True),
            "labels": serving.labels if serving else [],
            "metrics": {k: metrics[k] for k in ("accuracy", "tokens", "macro_f1", "oov", "in_vocabulary", "micro_f1",
                                                "exact_match", "utterances", "turns", "f1", "precision", "recall",
                                                "spans", "unlabelled") if k in metrics},
        }

    # --- loading (start-up and the poller thread) ---

    def start_polling(self) -> None:
        self._poller = threading.Thread(target=self._poll, name="model-poller", daemon=True)
        self._poller.start()

    def close(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=10)
        if self.fleet is not None:
            self.fleet.withdraw()
        for entry in self._entries.values():
            for model in entry.loaded.values():
                model.close()

    def _poll(self) -> None:
        while not self._stop.wait(self.settings.poll_interval_seconds):
            try:
                self.refresh()
                self._publish()  # every poll, also when nothing changed: the record's TTL says this worker lives
            except Exception:  # the poller must outlive any surprise on disk
                logger.exception("model refresh failed")

    def refresh(self, initial: bool = False) -> None:
        """Scan the models directory once: load new versions, unload old or deleted ones, swap."""
        with self._refresh_lock:
            names = [p.name for p in sorted(self.models_dir.iterdir())] if self.models_dir.is_dir() else []
            if initial:  # every version about to load, checked in one child (one TensorFlow import)
                self._check_in_child([self.models_dir / name / str(version) for name in names
                                      if MODEL_NAME.fullmatch(name) and (self.models_dir / name).is_dir()
                                      for version in self._versions_to_load(name)])
            for name in names:
                if MODEL_NAME.fullmatch(name) and (self.models_dir / name).is_dir():
                    self._refresh_model(name, initial)
            for name in set(self._entries) - set(names):
                logger.warning("model %s disappeared from %s", name, self.models_dir)
                for model in self._entries.pop(name).loaded.values():
                    model.close()

    def _versions_to_load(self, name: str) -> list[int]:
        """The versions of a model the first scan loads: the wanted ones, as many as it keeps."""
        root = self.models_dir / name
        on_disk = artifacts.list_versions(root)
        return self._wanted_versions(name, on_disk)[:self._keep_limit(root, on_disk, {})]

    def _wanted_versions(self, name: str, on_disk: list[int]) -> list[int]:
        pin = self.settings.model_versions.get(name)
        if pin is not None:
            return [pin] if pin in on_disk else []
        return sorted(on_disk, reverse=True)

    def _keep_limit(self, root: Path, on_disk: list[int], loaded: dict[int, ModelVersion]) -> int:
        """How many versions of this model stay loaded: ``keep_dialog_versions`` for dialog models, whose live
        sessions finish on the version they started with, ``keep_versions`` for taggers (stateless requests). The
        newest version's kind, from memory once it is loaded (the poller asks every interval)."""
        newest = max(on_disk, default=None)
        if newest in loaded:
            kind = loaded[newest].kind
        else:
            try:
                kind = artifacts.read_metadata(root / str(newest)).get("kind", "tagger") if on_disk else "tagger"
            except (OSError, ValueError):
                kind = "tagger"  # its load will say what is wrong
        return self.settings.keep_dialog_versions if kind == "dialog" else self.settings.keep_versions

    def _refresh_model(self, name: str, initial: bool) -> None:
        root = self.models_dir / name
        on_disk = artifacts.list_versions(root)
        old = self._entries.get(name, _ModelEntry())
        entry = _ModelEntry(dict(old.loaded), dict(old.rejected), old.serving)
        keep: list[int] = []
        limit = self._keep_limit(root, on_disk, entry.loaded)
        for version in self._wanted_versions(name, on_disk):
            if len(keep) >= limit:
                break
            if version in entry.loaded:
                keep.append(version)
                continue
            directory = root / str(version)
            fingerprint = directory_fingerprint(directory)
            rejection = entry.rejected.get(version)
            if rejection is not None and rejection.fingerprint == fingerprint:
                continue  # rejected before, and nothing changed since
            if not initial and self.settle_seconds > 0:
                time.sleep(self.settle_seconds)
                if directory_fingerprint(directory) != fingerprint:
                    logger.info("%s/%d is still being written; will look again", name, version)
                    continue
            try:
                entry.loaded[version] = self._load(name, version, directory)
                entry.rejected.pop(version, None)
                keep.append(version)
            except Exception as error:  # any failure to load or warm up rejects the version
                reason = (str(error) if isinstance(error, CheckedInChild) else
                          f"{type(error).__name__}: {error}").splitlines()[0][:500]
                logger.error("rejected %s/%d: %s", name, version, reason)
                metrics.LOAD_FAILURES.labels(name).inc()
                entry.rejected[version] = _Rejection(fingerprint, reason)
        for version in [v for v in entry.rejected if v not in on_disk]:
            del entry.rejected[version]
        retired = [entry.loaded.pop(v) for v in list(entry.loaded) if v not in keep]
        entry.serving = entry.loaded[max(keep)] if keep else None
        if entry.serving is not None and entry.serving is not old.serving:
            logger.info("serving %s version %d", name, entry.serving.version)
        self._entries[name] = entry  # the swap: requests that already hold a version keep it
        metrics.set_loaded_versions(name, list(entry.loaded), entry.serving.version if entry.serving else None,
                                    [m.version for m in retired])
        for model in retired:
            logger.info("unloading %s version %d", name, model.version)
            model.close()

    def _load(self, name: str, version: int, directory: Path) -> ModelVersion:
        metadata = artifacts.read_metadata(directory)
        kind = metadata.get("kind", "tagger")
        if kind not in SUPPORTED_KINDS:
            raise ValueError(f"unsupported model kind {kind!r}")
        if not metadata.get("labels"):
            raise ValueError("metadata.json lists no labels")
        started = time.perf_counter()
        self._check_in_child([directory])
        rejected = self._child_rejections.pop(str(directory), None)
        if rejected is not None and rejected[0] == directory_fingerprint(directory):
            raise CheckedInChild(rejected[1])
        cache = self.settings.fast_path_cache
        if kind == "dialog":
            model = self._load_dialog(name, version, directory, metadata)
        else:
            if metadata.get("schema_guided"):
                from training.schema_guided.saved import SavedSchemaTagger

                tagger = SavedSchemaTagger(directory, metadata, runtime=self.settings.runtime, fast_cache=cache,
                                           precision=self.settings.encoder_precision)
            else:  # a fast path that disagrees raises
                tagger = SavedTagger(directory, metadata, runtime=self.settings.runtime, fast_cache=cache)
            batcher = None
            if self.settings.batching:
                function = partial(span_batch, tagger) if tagger.spans else tagger.tag
                batcher = MicroBatcher(function, self.settings.max_batch_size, self.settings.batch_timeout_ms / 1000,
                                       name=f"batcher-{name}-{version}", on_call=partial(metrics.observe_batch, name))
            model = ModelVersion(name, version, directory, metadata, tagger, batcher)
            if self.settings.warmup:
                try:
                    condition, allowed = None, set(model.labels)
                    if model.schema_guided:  # a turn of its first shipped service, tagged with that service's tags
                        condition = tagger.encode_service(next(iter(tagger.shipped.values())))
                        allowed = set(condition.tags)
                    result = tagger.tag([WARMUP_SENTENCE], conditions=[condition])[0]
                    if len(result.tags) != len(WARMUP_SENTENCE) or not set(result.tags) <= allowed:
                        raise ValueError(f"warm-up request answered {result.tags!r}")
                except Exception:
                    model.close()
                    raise
        reader = model.tagger or model.dialog
        logger.info("loaded %s version %d from %s in %.1f s (runtime: %s)", name, version, directory,
                    time.perf_counter() - started, reader.runtime)
        return model

    def _check_in_child(self, directories: list[Path]) -> None:
        """Versions whose checked fast path the cache lacks, in a process without TensorFlow: checked against their
        SavedModels in one child process (``service.fast_path_check``), which writes the cache entries the readers
        then load, so that this worker never imports TensorFlow. One child at a time on this host (a file lock): the
        other workers wait, then find the entries. A version the child rejects is rejected here with its reason
        (``_child_rejections``), which the cache keeps for the other workers; if the child itself fails, the readers
        check their versions in this process."""
        if self.settings.runtime != "onnx" or not self.settings.fast_path_cache or "tensorflow" in sys.modules:
            return
        from service.fast_path_check import cache_entry

        def missing() -> list[Path]:
            found = []
            for directory in directories:
                try:
                    entry = cache_entry(directory, artifacts.read_metadata(directory))
                except (OSError, ValueError):
                    continue  # its load will say what is wrong
                reason = None if entry.is_dir() else (incomplete_saved_model(directory) or fast_cache.rejection(entry))
                if reason is not None:  # incomplete, or checked and rejected before (by this worker or another)
                    self._child_rejections[str(directory)] = (directory_fingerprint(directory), reason)
                elif not entry.is_dir():
                    found.append(directory)
            return found

        if not missing():
            return
        root = fast_cache.cache_root()
        root.mkdir(parents=True, exist_ok=True)
        with open(root / ".checking.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            todo = missing()
            if not todo:
                return
            started = time.perf_counter()
            try:
                run = subprocess.run([sys.executable, "-m", "service.fast_path_check", *map(str, todo)],
                                     capture_output=True, text=True, timeout=CHILD_CHECK_SECONDS)
            except subprocess.TimeoutExpired:
                logger.warning("checking fast paths in a child process took over %d s; checking them here",
                               CHILD_CHECK_SECONDS)
                return
        verdicts = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
        for verdict in verdicts:
            if verdict.get("error"):
                self._child_rejections[verdict["directory"]] = (directory_fingerprint(Path(verdict["directory"])),
                                                                verdict["error"])
        if run.returncode != 0 or len(verdicts) != len(todo):
            logger.warning("checking fast paths in a child process failed (exit %d); the versions left are checked "
                           "here: %s", run.returncode, run.stderr.strip()[-2000:])
        else:
            logger.info("%d fast path(s) checked in a child process in %.1f s", len(todo), time.perf_counter() - started)

    def _load_dialog(self, name: str, version: int, directory: Path, metadata: dict[str, Any]) -> ModelVersion:
        # A fast step that disagrees with the SavedModel raises; an int8 encoder that disagrees steps in float32
        dialog = SavedDialogModel(directory, metadata, runtime=self.settings.runtime,
                                  precision=self.settings.encoder_precision, cached_turns=self.settings.cached_turns,
                                  fast_cache=self.settings.fast_path_cache)
        batcher = None
        if self.settings.batching:
            batcher = MicroBatcher(lambda requests: step_batch(dialog, requests), self.settings.max_batch_size,
                                   self.settings.batch_timeout_ms / 1000, name=f"batcher-{name}-{version}",
                                   on_call=partial(metrics.observe_batch, name))
        model = ModelVersion(name, version, directory, metadata, None, batcher, dialog)
        if self.settings.warmup:
            try:
                state_h, state_c = dialog.zero_state(1)
                result = step_batch(dialog, [StepRequest(DialogTurnInput(WARMUP_TURN, "A"), state_h[0], state_c[0])])[0]
                if result.probabilities.shape != (len(model.labels),) or not np.isfinite(result.probabilities).all():
                    raise ValueError(f"warm-up turn answered probabilities of shape {result.probabilities.shape}")
                if result.state_h.shape != (dialog.state_size,):
                    raise ValueError(f"warm-up turn answered a state of shape {result.state_h.shape}")
            except Exception:
                model.close()
                raise
        return model
