"""Model directories on disk, TF Serving's layout: ``<root>/<name>/<integer version>/`` + ``metadata.json``.

Shared by the exporter (which writes a new version atomically: a hidden temporary directory renamed
into place, so a watcher never sees a half-written version) and by anything that loads models.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import tempfile
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Callable

METADATA_FILE = "metadata.json"
_VERSION_NAME = re.compile(r"[1-9][0-9]{0,8}")  # "1", "2", ... (no "01", bounded length)

# Distributions whose versions are recorded in every model's metadata.
RECORDED_LIBRARIES = ("tensorflow", "keras", "numpy", "scikit-learn", "conllu", "torch", "jax")


class ModelNotFoundError(FileNotFoundError):
    """A model path holds neither a model version nor any version directory."""


def list_versions(model_root: str | Path) -> list[int]:
    """Integer versions under ``model_root`` that hold a metadata file, ascending."""
    root = Path(model_root)
    if not root.is_dir():
        return []
    return sorted(int(p.name) for p in root.iterdir()
                  if _VERSION_NAME.fullmatch(p.name) and (p / METADATA_FILE).is_file())


def resolve_model_dir(path: str | Path) -> Path:
    """``models/pos/3`` -> itself; ``models/pos`` -> its highest version."""
    path = Path(path)
    if (path / METADATA_FILE).is_file():
        return path
    versions = list_versions(path)
    if not versions:
        raise ModelNotFoundError(f"{path}: no model here (no {METADATA_FILE}, no version directories)")
    return path / str(versions[-1])


def publish_version(staging_dir: Path, model_root: Path) -> tuple[int, Path]:
    """Move a fully written staging directory to ``model_root/<highest + 1>``, atomically."""
    model_root.mkdir(parents=True, exist_ok=True)
    while True:
        existing = [int(p.name) for p in model_root.iterdir() if _VERSION_NAME.fullmatch(p.name)]
        version = max(existing, default=0) + 1
        target = model_root / str(version)
        try:
            os.rename(staging_dir, target)  # fails if another writer took this number first
            return version, target
        except OSError:
            if not target.exists():
                raise


def write_new_version(model_root: str | Path, write: Callable[[Path], dict[str, Any]]) -> tuple[int, Path]:
    """A new version of ``model_root``: ``write(staging)`` fills a private staging directory and returns
    the metadata, which is written there; the directory is then published whole as the next version (a
    failure leaves nothing behind), and its metadata gets the version number."""
    model_root = Path(model_root)
    model_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=model_root))
    staging.chmod(0o755)  # mkdtemp makes it private; a model is read by the service's user too
    try:
        write_metadata(staging, write(staging))
        version, target = publish_version(staging, model_root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    write_metadata(target, {**read_metadata(target), "version": version})
    return version, target


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in RECORDED_LIBRARIES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            pass
    return versions


def read_metadata(model_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(model_dir) / METADATA_FILE).read_text(encoding="utf-8"))


def write_metadata(model_dir: str | Path, metadata: dict[str, Any]) -> None:
    text = json.dumps(metadata, indent=2, ensure_ascii=False, sort_keys=False) + "\n"
    (Path(model_dir) / METADATA_FILE).write_text(text, encoding="utf-8")
