"""A version's fast path kept on disk, so that the next process serves it without TensorFlow or the SavedModel.

A reader (``SavedTagger``, ``SavedDialogModel``, ``SavedSchemaTagger``) given ``fast_cache=True`` looks for the
version's entry under ``$SEQTAG_CACHE_DIR`` (default ``~/.cache/seqtag``) ``/fast-path/<key>/``:

- ``weights.npz``: the SavedModel's variables that the fast-path builders read, by collection (``stored_variables``,
  an ensemble's members) and name;
- ``reference.npz``: the SavedModel's own answers on the reader's probe (probabilities, states, input ids);
- ``record.json``: the check's figures when the entry was written, the characters TensorFlow lower-cases otherwise
  than Python (``fast_path.graph_keeps``), the library versions.

An entry only saves TensorFlow and the SavedModel, never the check: the reader builds its graphs from the stored
weights with today's code, runs them on the probe and compares with the stored answers to ``fast_path.TOLERANCE``
before it serves, exactly as it compares with a live SavedModel. A graph that disagrees is refused the same way.
What it saves in a service worker, measured on 2 cores with every shipped model: TensorFlow's import (about 690 MiB)
and the SavedModels (``docs/speed.md``).

The key is the sha256 of the version's files, of the reader's code that defines its probe (``code``), and of the
NumPy, ONNX, ONNX Runtime and TensorFlow versions: a changed model, probe or library is a new key, checked against
its SavedModel again. Entries are written whole (a folder renamed into place) or not at all.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from training.common import fast_path

logger = logging.getLogger(__name__)

CACHE_ENV = "SEQTAG_CACHE_DIR"
_LIBRARIES = ("numpy", "onnx", "onnxruntime", "tensorflow")
_COMMON_CODE = (Path(fast_path.__file__), Path(__file__))


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "seqtag") / "fast-path"


def _version(name: str) -> str:
    try:
        return package_metadata.version(name)
    except package_metadata.PackageNotFoundError:
        return "-"


_KEYS: dict[tuple, str] = {}  # cache_key's answers by the files' names, sizes and modification times


def cache_key(directory: Path, code: Sequence[Path] = ()) -> str:
    """The sha256 of the version's files, the code and the library versions. Hashing a version reads tens of MB,
    and a service start asks for each version's key several times (the registry, then the reader): the answer is
    kept per process for as long as no file's size or modification time changes."""
    files = sorted(p for p in directory.rglob("*") if p.is_file() and "report" not in p.relative_to(directory).parts)
    paths = [*files, *_COMMON_CODE, *code]
    stamp = tuple((str(path), stat.st_size, stat.st_mtime_ns) for path, stat in ((p, p.stat()) for p in paths))
    known = _KEYS.get(stamp)
    if known is not None:
        return known
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path.relative_to(directory) if path.is_relative_to(directory) else path.name).encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    for name in _LIBRARIES:
        digest.update(f"{name}={_version(name)}".encode())
    _KEYS[stamp] = digest.hexdigest()
    return _KEYS[stamp]


def entry_for(directory: Path, code: Sequence[Path] = ()) -> Path:
    """Where the version's checked fast path is (or goes) in the cache."""
    return cache_root() / cache_key(Path(directory), code)


class StoredVariable:
    """A variable as the builders read one: ``name`` and ``numpy()``."""

    def __init__(self, name: str, value: np.ndarray):
        self.name = name
        self._value = value

    def numpy(self) -> np.ndarray:
        return self._value


class StoredWeights:
    """A SavedModel's weights as the fast-path builders read them (``stored_variables``, ``variables`` and each
    collection kept, e.g. an ensemble's ``member_<i>_variables``), from a cache entry."""

    def __init__(self, collections: dict[str, list[StoredVariable]]):
        self.stored_variables = collections.get("stored_variables", [])
        self.variables = self._all_variables = self.stored_variables
        for name, variables in collections.items():
            setattr(self, name, variables)


@dataclass
class CachedFastPath:
    entry: Path
    weights: StoredWeights
    reference: dict[str, np.ndarray]  # the SavedModel's answers on the probe
    record: dict


def saved_model_collections(saved_model, extra: Iterable[str] = ()) -> dict[str, list]:
    """The variables a builder reads from ``saved_model``: its stored (or all) variables, and the named ``extra``
    collections it has."""
    stored = getattr(saved_model, "stored_variables", None)
    main = list(stored) if stored is not None else list(saved_model.variables or saved_model._all_variables)
    collections = {"stored_variables": main}
    for name in extra:
        found = getattr(saved_model, name, None)
        if found is not None:
            collections[name] = list(found)
    return collections


def settle(entry: Path | None, cached: CachedFastPath | None, directory: Path, check: dict, saved_model,
           reference: dict[str, np.ndarray], extra: Iterable[str] = ()) -> dict:
    """A reader's last step once its fast path passed the check: name the entry it came from in ``check``, or keep
    it now (``entry`` given, not from the cache) with the SavedModel's weights (``extra`` collections too)."""
    if cached is not None:
        check["cache"] = str(entry)
    elif entry is not None:
        save(entry, directory, saved_model_collections(saved_model, extra), reference, check)
    return check


def load(entry: Path) -> CachedFastPath | None:
    """The entry's weights, reference answers and record, or None when there is none (or it cannot be read)."""
    if not (entry / "record.json").is_file():
        return None
    try:
        record = json.loads((entry / "record.json").read_text(encoding="utf-8"))
        with np.load(entry / "weights.npz", allow_pickle=False) as stored:
            collections = {name: [StoredVariable(variable, stored[f"c{i}_{j}"]) for j, variable in enumerate(names)]
                           for i, (name, names) in enumerate(record["collections"].items())}
        with np.load(entry / "reference.npz", allow_pickle=False) as stored:
            reference = {name: stored[f"r{i}"] for i, name in enumerate(record["reference"])}
    except (OSError, ValueError, KeyError) as error:
        logger.warning("unreadable fast-path cache entry %s (%s): checking against the SavedModel again", entry, error)
        return None
    fast_path.use_graph_keeps(record["graph_keeps"])
    logger.info("%s: fast path from the cache (%s), first checked %s", record.get("model"), entry, record["checked_at"])
    return CachedFastPath(entry, StoredWeights(collections), reference, record)


def rejection_file(entry: Path) -> Path:
    """Where a version whose check failed keeps the reason (beside the entry it never got)."""
    return entry.parent / f"{entry.name}.rejected.json"


def rejection(entry: Path) -> str | None:
    """Why this key's version was rejected when it was checked, or None. The key covers the version's files, the
    code and the libraries, so the same check would fail again: a service rejects it without checking it anew
    (delete the file to check it again)."""
    try:
        return json.loads(rejection_file(entry).read_text(encoding="utf-8"))["reason"]
    except (OSError, ValueError, KeyError):
        return None


def save_rejection(entry: Path, directory: Path, reason: str) -> None:
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        staging = rejection_file(entry).with_suffix(".writing")
        staging.write_text(json.dumps({"model": str(directory), "reason": reason,
                                       "checked_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n",
                           encoding="utf-8")
        staging.rename(rejection_file(entry))
    except OSError as error:
        logger.warning("could not keep the rejection of %s in %s: %s", directory, entry.parent, error)


def save(entry: Path, directory: Path, collections: dict[str, list], reference: dict[str, np.ndarray],
         check: dict) -> None:
    """Keep a checked fast path's weights (``collections`` of variables) and the SavedModel's ``reference`` answers;
    a cache that cannot be written is only a slower next start."""
    root = entry.parent
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".writing-", dir=root))
        arrays, names = {}, {}
        for i, (name, variables) in enumerate(collections.items()):
            names[name] = [variable.name for variable in variables]
            arrays.update({f"c{i}_{j}": np.asarray(variable.numpy()) for j, variable in enumerate(variables)})
        np.savez(staging / "weights.npz", **arrays)
        np.savez(staging / "reference.npz", **{f"r{i}": np.asarray(value) for i, value in enumerate(reference.values())})
        record = {"model": str(directory), "fast_check": check, "collections": names, "reference": list(reference),
                  "graph_keeps": sorted(fast_path.graph_keeps()),
                  "checked_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "libraries": {name: _version(name) for name in _LIBRARIES}}
        (staging / "record.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        try:
            staging.rename(entry)
        except OSError:  # another process wrote it first
            shutil.rmtree(staging, ignore_errors=True)
    except OSError as error:
        logger.warning("could not keep the fast path of %s in %s: %s", directory, root, error)
