"""A tagger's checked fast path kept on disk, so that the next process tags without TensorFlow or the SavedModel.

``SavedTagger(..., runtime="onnx", fast_cache=True)`` (what ``seqtag tag`` uses; the service does not) looks for the
version's entry under ``$SEQTAG_CACHE_DIR`` (default ``~/.cache/seqtag``) ``/fast-path/<key>/``. The key is the
sha256 of the version's files (SavedModel, variables, ``vocab.json``, ``metadata.json``), of the code that writes
and reads the graphs (``fast_tagger.py``, ``fast_path.py``) and of the NumPy, ONNX, ONNX Runtime and TensorFlow
versions, so a changed model, code or library is a new key. An entry is written only after the fast path agreed
with the SavedModel on the probe (``SavedTagger._build_fast_path``), and keeps that check's figures: a cached
graph is a checked one. What it saves, measured on 2 cores with ``models/pos``: TensorFlow's import and the
SavedModel's load: a process starts in 1.4 s instead of 7.5 s and holds 336 MiB instead of 1.15 GB.

An entry: ``char.onnx``, ``sentence.onnx`` (float32; int8 is derived and checked anew at load), ``check.json``
(the check's figures and the characters TensorFlow lower-cases otherwise than Python, ``fast_path.graph_keeps``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from importlib import metadata as package_metadata
from pathlib import Path

from training.common import fast_path

logger = logging.getLogger(__name__)

CACHE_ENV = "SEQTAG_CACHE_DIR"
_CODE = (Path(__file__).with_name("fast_tagger.py"), Path(fast_path.__file__))
_LIBRARIES = ("numpy", "onnx", "onnxruntime", "tensorflow")


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "seqtag") / "fast-path"


def _version(name: str) -> str:
    try:
        return package_metadata.version(name)
    except package_metadata.PackageNotFoundError:
        return "-"


def cache_key(directory: Path) -> str:
    digest = hashlib.sha256()
    files = sorted(p for p in directory.rglob("*") if p.is_file() and "report" not in p.relative_to(directory).parts)
    for path in [*files, *_CODE]:
        digest.update(str(path.relative_to(directory) if path.is_relative_to(directory) else path.name).encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    for name in _LIBRARIES:
        digest.update(f"{name}={_version(name)}".encode())
    return digest.hexdigest()


def entry_for(directory: Path) -> Path:
    """Where the version's checked fast path is (or goes) in the cache."""
    return cache_root() / cache_key(directory)


def load(entry: Path, directory: Path, metadata: dict):
    """(FastTagger, its check's record) from the cache ``entry``, or None when there is none."""
    import onnx

    from training.tagger.fast_tagger import FastTagger

    try:
        record = json.loads((entry / "check.json").read_text(encoding="utf-8"))
        char_model, sentence_model = onnx.load(str(entry / "char.onnx")), onnx.load(str(entry / "sentence.onnx"))
        vocab = json.loads((directory / "vocab.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        if (entry / "check.json").exists():
            logger.warning("%s: unreadable fast-path cache entry %s (%s): building it again", directory, entry, error)
        return None
    fast_path.use_graph_keeps(record["graph_keeps"])
    logger.info("%s: fast path from the cache (%s), checked %s", directory, entry, record["checked_at"])
    return FastTagger(metadata, vocab, char_model, sentence_model), {**record["fast_check"], "cache": str(entry)}


def save(entry: Path, directory: Path, fast, check: dict) -> None:
    """Keep a checked fast path (``fast.char_model``, ``fast.sentence_model`` in float32); a cache that cannot be
    written is only a slower next start."""
    import time

    import onnx

    root = entry.parent
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".writing-", dir=root))
        onnx.save(fast.char_model, str(staging / "char.onnx"))
        onnx.save(fast.sentence_model, str(staging / "sentence.onnx"))
        record = {"model": str(directory), "fast_check": check, "graph_keeps": sorted(fast_path.graph_keeps()),
                  "checked_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "libraries": {name: _version(name) for name in _LIBRARIES}}
        (staging / "check.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        try:
            staging.rename(entry)
        except OSError:  # another process wrote it first
            shutil.rmtree(staging, ignore_errors=True)
    except OSError as error:
        logger.warning("could not keep the fast path of %s in %s: %s", directory, root, error)
