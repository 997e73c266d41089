"""Dialog corpora for turn-level tagging: SwDA dialog acts, SGD next system actions, and a generic JSONL.

Every reader returns ``Dialog`` objects whose turns carry the *target* of the task, so that one
trainer can handle all three:

* ``swda``: Switchboard Dialog Act corpus as one ``speaker|utterance|tag`` line per utterance,
  one conversation per ``.txt`` file. Every turn has exactly one label, its dialog-act tag.
* ``sgd``: Schema-Guided Dialogue as one JSON dialogue per line. The task is to predict, after each
  USER turn, the actions of the SYSTEM turn that answers it, so a Dialog holds the USER turns only,
  each labelled with the sorted set of ``ACT(slot)`` labels of that reply.
* ``jsonl``: the format for users' own data, one dialog per line::

      {"id": "d1", "turns": [{"speaker": "A", "text": "hi", "label": "greet"},
                             {"speaker": "B", "text": "hello", "labels": ["greet", "inform"]},
                             {"speaker": "A", "text": "unlabelled turn"}]}

  ``label`` (one label) or ``labels`` (a list, multi-label) or neither (the turn is not trained on
  or scored); ``id`` and ``speaker`` are optional; unknown keys are ignored.

Label names: a ``label_map.txt`` in a data directory or beside it (SwDA ships one: ``name|code`` per line, e.g.
``Yes-No-Question|qy``) names the labels; ``find_label_names`` reads it for the models' metadata.

Files are read as bytes and decoded one line at a time, so that a UTF-8 error names its exact line
and so that only ``\\n`` ends a line (``str.splitlines`` would also split on U+2028 and friends,
which do occur inside transcribed text). Every bad input raises ``DataFormatError`` naming file and
line.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.common.errors import DataFormatError
from training.common.jsonl import json_objects, kind_of, lines

logger = logging.getLogger(__name__)

FORMATS = ("swda", "sgd", "jsonl")

SGD_SPEAKERS = ("USER", "SYSTEM")


@dataclass(frozen=True)
class Turn:
    speaker: str
    text: str
    # One label for dialog acts, a sorted set of unique labels for actions; () means "no label
    # applies" (e.g. the system did nothing), None means unlabelled: not trained on or scored.
    labels: tuple[str, ...] | None


@dataclass(frozen=True)
class Dialog:
    dialog_id: str
    turns: tuple[Turn, ...]
    source: str  # "path:line" where the dialog starts, for messages about it later


def action_label(act: str, slot: str) -> str:
    """The label of one SGD action: ``("REQUEST", "city")`` -> ``"REQUEST(city)"``, ``("GOODBYE", "")`` -> ``"GOODBYE"``."""
    if not act:
        raise ValueError("an action needs a non-empty act")
    return f"{act}({slot})" if slot else act


def read_dialogs(path: str | Path, format: str) -> list[Dialog]:
    """Read a corpus in one of ``FORMATS``."""
    readers = {"swda": read_swda, "sgd": read_sgd, "jsonl": read_jsonl}
    if format not in readers:
        raise ValueError(f"unknown dialog format {format!r}; choose one of: {', '.join(FORMATS)}")
    return readers[format](path)


# --- SwDA --------------------------------------------------------------------------------------


def read_swda(path: str | Path) -> list[Dialog]:
    """Read one SwDA conversation file, or every ``*.txt`` file of a directory (sorted by name)."""
    path = Path(path)
    if path.is_dir():
        files = sorted((f for f in path.glob("*.txt") if f.is_file()), key=lambda f: f.name)
        if not files:
            raise DataFormatError(str(path), None, "directory holds no .txt conversation files")
    elif path.exists():
        files = [path]
    else:
        raise DataFormatError(str(path), None, "no such file or directory")
    dialogs = [_read_swda_file(file) for file in files]
    logger.info("read %d SwDA conversations (%d utterances) from %s",
                len(dialogs), sum(len(d.turns) for d in dialogs), path)
    return dialogs


def _read_swda_file(path: Path) -> Dialog:
    turns: list[Turn] = []
    for number, line in lines(path):
        if not line.strip():
            continue
        # The utterance may itself contain '|', the speaker and the tag never do: split at the
        # first and at the last bar.
        speaker, bar, rest = line.partition("|")
        utterance, bar2, tag = rest.rpartition("|")
        if not bar or not bar2:
            raise DataFormatError(str(path), number, f"expected 'speaker|utterance|tag', found {line[:80]!r}")
        speaker, tag = speaker.strip(), tag.strip()
        if not speaker:
            raise DataFormatError(str(path), number, "empty speaker")
        if not tag:
            raise DataFormatError(str(path), number, "empty dialog-act tag")
        turns.append(Turn(speaker, utterance.strip(), (tag,)))
    if not turns:
        raise DataFormatError(str(path), None, "no utterances in the conversation file")
    return Dialog(path.stem, tuple(turns), f"{path}:1")


# --- label names --------------------------------------------------------------------------------

LABEL_MAP_FILE = "label_map.txt"


def find_label_names(data_path: str | Path) -> dict[str, str] | None:
    """Label code -> name from the ``label_map.txt`` in the data directory ``data_path`` or beside it (SwDA's
    lies beside its train/ and val/ directories), or None when there is none."""
    path = Path(data_path)
    for folder in ([path] if path.is_dir() else []) + [path.parent]:
        if (folder / LABEL_MAP_FILE).is_file():
            return read_label_names(folder / LABEL_MAP_FILE)
    return None


def read_label_names(path: str | Path) -> dict[str, str]:
    """A ``name|code`` line per label -> {code: name}. SwDA's file has a stray third field on one line
    (``Reject|ar|344``): fields after the code are ignored, with a warning."""
    path = Path(path)
    names: dict[str, str] = {}
    for number, line in lines(path):
        if not line.strip():
            continue
        name, _, rest = line.partition("|")
        code, _, extra = rest.partition("|")
        name, code = name.strip(), code.strip()
        if not name or not code:
            raise DataFormatError(str(path), number, f"expected 'name|code', found {line[:80]!r}")
        if extra:
            logger.warning("%s:%d: ignored what follows 'name|code': %r", path, number, extra[:40])
        if names.get(code, name) != name:
            raise DataFormatError(str(path), number, f"label {code!r} named twice: {names[code]!r} and {name!r}")
        names[code] = name
    if not names:
        raise DataFormatError(str(path), None, "no 'name|code' lines")
    return names


# --- JSON lines --------------------------------------------------------------------------------


def _dialog_id(path: Path, number: int, record: dict[str, Any], key: str) -> str:
    value = record.get(key)
    if value is None:
        return f"{path.stem}:{number}"
    if not isinstance(value, str) or not value:
        raise DataFormatError(str(path), number, f"{key!r} must be a non-empty string, found {kind_of(value)}")
    return value


def _turn_objects(path: Path, number: int, record: dict[str, Any]) -> list[dict[str, Any]]:
    turns = record.get("turns")
    if not isinstance(turns, list):
        raise DataFormatError(str(path), number, "'turns' must be a list of turn objects"
                              + ("" if "turns" in record else " (missing)"))
    if not turns:
        raise DataFormatError(str(path), number, "'turns' is empty")
    for index, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise DataFormatError(str(path), number, f"turn {index} is {kind_of(turn)}, expected an object")
    return turns


def _string_field(path: Path, number: int, index: int, turn: dict[str, Any], key: str,
                  default: str | None = None) -> str:
    """turn[key], which must be a string; ``default`` when absent (None: the key is required)."""
    if key not in turn and default is not None:
        return default
    value = turn.get(key)
    if not isinstance(value, str):
        found = "missing" if key not in turn else kind_of(value)
        raise DataFormatError(str(path), number, f"turn {index}: {key!r} must be a string, found {found}")
    return value


# --- SGD ---------------------------------------------------------------------------------------


def read_sgd(path: str | Path) -> list[Dialog]:
    """Read Schema-Guided Dialogue JSONL: one Turn per USER turn, labelled with the next system actions."""
    path = Path(path)
    dialogs: list[Dialog] = []
    for number, record in json_objects(path):
        dialog_id = _dialog_id(path, number, record, "dialogue_id")
        raw_turns = _turn_objects(path, number, record)
        speakers: list[str] = []
        texts: list[str] = []
        actions: list[tuple[str, ...]] = []
        for index, turn in enumerate(raw_turns):
            speaker = turn.get("speaker")
            if speaker not in SGD_SPEAKERS:
                raise DataFormatError(str(path), number,
                                      f"turn {index}: 'speaker' must be \"USER\" or \"SYSTEM\", found {speaker!r}")
            speakers.append(speaker)
            texts.append(_string_field(path, number, index, turn, "utterance"))
            actions.append(_sgd_actions(path, number, index, turn))
        turns: list[Turn] = []
        for index, speaker in enumerate(speakers):
            if speaker != "USER":
                continue  # SYSTEM turns are targets, not inputs; one before any USER turn answers nothing
            if index + 1 == len(speakers):
                labels: tuple[str, ...] | None = None  # the dialogue stops here: the reply is unknown
            elif speakers[index + 1] == "USER":
                labels = ()  # the user spoke again: the system did nothing
            else:
                # Only the reply that immediately follows; a second SYSTEM turn in a row answers nothing.
                labels = actions[index + 1]
            turns.append(Turn("USER", texts[index], labels))
        if not turns:
            raise DataFormatError(str(path), number, "dialogue has no USER turn")
        dialogs.append(Dialog(dialog_id, tuple(turns), f"{path}:{number}"))
    logger.info("read %d SGD dialogues (%d user turns) from %s",
                len(dialogs), sum(len(d.turns) for d in dialogs), path)
    return dialogs


def _sgd_actions(path: Path, number: int, index: int, turn: dict[str, Any]) -> tuple[str, ...]:
    """The sorted unique action labels of one SGD turn."""
    actions = turn.get("actions")
    if not isinstance(actions, list):
        found = "missing" if "actions" not in turn else kind_of(actions)
        raise DataFormatError(str(path), number, f"turn {index}: 'actions' must be a list, found {found}")
    labels = set()
    for action in actions:
        if (not isinstance(action, list) or len(action) != 2
                or not all(isinstance(part, str) for part in action) or not action[0]):
            raise DataFormatError(str(path), number,
                                  f"turn {index}: each action must be [act, slot] (two strings, act non-empty), "
                                  f"found {json.dumps(action)[:80]}")
        labels.add(action_label(action[0], action[1]))
    return tuple(sorted(labels))


# --- generic JSONL -----------------------------------------------------------------------------


def read_jsonl(path: str | Path) -> list[Dialog]:
    """Read the generic dialog JSONL format described in the module docstring."""
    path = Path(path)
    dialogs: list[Dialog] = []
    for number, record in json_objects(path):
        dialog_id = _dialog_id(path, number, record, "id")
        turns = []
        for index, turn in enumerate(_turn_objects(path, number, record)):
            speaker = _string_field(path, number, index, turn, "speaker", default="")
            text = _string_field(path, number, index, turn, "text")
            turns.append(Turn(speaker, text, _generic_labels(path, number, index, turn)))
        dialogs.append(Dialog(dialog_id, tuple(turns), f"{path}:{number}"))
    logger.info("read %d dialogs (%d turns, %d labelled) from %s", len(dialogs),
                sum(len(d.turns) for d in dialogs),
                sum(t.labels is not None for d in dialogs for t in d.turns), path)
    return dialogs


def _generic_labels(path: Path, number: int, index: int, turn: dict[str, Any]) -> tuple[str, ...] | None:
    # A null value counts as absent: writers often emit "label": null for unlabelled turns.
    label, labels = turn.get("label"), turn.get("labels")
    if label is not None and labels is not None:
        raise DataFormatError(str(path), number, f"turn {index}: has both 'label' and 'labels'; use one")
    if label is not None:
        if not isinstance(label, str) or not label:
            raise DataFormatError(str(path), number,
                                  f"turn {index}: 'label' must be a non-empty string, found {kind_of(label)}")
        return (label,)
    if labels is not None:
        if not isinstance(labels, list):
            raise DataFormatError(str(path), number,
                                  f"turn {index}: 'labels' must be a list of strings, found {kind_of(labels)}")
        for item in labels:
            if not isinstance(item, str) or not item:
                raise DataFormatError(str(path), number,
                                      f"turn {index}: 'labels' must hold non-empty strings, found {kind_of(item)}")
        return tuple(sorted(set(labels)))  # an empty list is a real answer: no label applies
    return None
