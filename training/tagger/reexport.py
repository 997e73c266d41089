"""Re-export a trained model version with the current exporter: ``seqtag export --from DIR --out ROOT``.

The weights are read from the version's SavedModel and placed into a freshly built model by layer and
role (``bilstm_1`` / forward / kernel, ...), so they survive changes in how the model nests its layers.
The vocabularies come from the version's ``vocab.json``, or, for versions written before it existed,
are rebuilt from the training file named in its metadata, which must still have the same sha256. The new
export must give the same probabilities as the old one on the dev file before it is published.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import keras
import numpy as np

from training.common import artifacts
from training.common.errors import ConfigError
from training.common.saved_model import variable_role
from training.tagger.config import TaggerConfig
from training.tagger.data import read_conllu
from training.tagger.export import VOCAB_FILE, export_tagger
from training.tagger.model import build_tagger
from training.tagger.saved_tagger import SavedTagger
from training.tagger.vocab import TaggerVocabs

logger = logging.getLogger(__name__)


def copy_weights(saved_variables, model: keras.Model) -> None:
    saved = {}
    for variable in saved_variables:
        role = variable_role(variable.name)
        if role is not None:
            if role in saved:
                raise ValueError(f"two saved variables for {role}")
            saved[role] = variable
    targets = [v for v in model.weights if variable_role(v.path) is not None]
    if len(targets) != len(saved):
        raise ValueError(f"the saved model has {len(saved)} weights, the new one {len(targets)}")
    for target in targets:
        source = saved.get(variable_role(target.path))
        if source is None or tuple(source.shape) != tuple(target.shape):
            raise ValueError(f"no saved weight matching {target.path} {tuple(target.shape)}")
        target.assign(source.numpy())


def load_vocabs(model_dir: Path, metadata: dict, config: TaggerConfig) -> TaggerVocabs:
    vocab_file = model_dir / VOCAB_FILE
    if vocab_file.is_file():
        return TaggerVocabs.from_dict(json.loads(vocab_file.read_text(encoding="utf-8")))
    record = metadata.get("data", {}).get("train", {"path": "", "sha256": ""})
    path = Path(record["path"])
    if not path.is_file() or artifacts.sha256_file(path) != record["sha256"]:
        raise ConfigError(f"{model_dir} has no {VOCAB_FILE}, and its training file {path} is missing or changed")
    vocabs = TaggerVocabs.build(read_conllu(path, config.tag_column), config.min_word_count)
    if list(vocabs.tags.items) != metadata["labels"]:
        raise ConfigError(f"rebuilt labels differ from {model_dir}'s")
    return vocabs


def reexport(source_dir: Path, model_root: Path, command: str) -> tuple[int, Path]:
    metadata = artifacts.read_metadata(source_dir)
    config = TaggerConfig.from_dict(metadata["config"])
    vocabs = load_vocabs(source_dir, metadata, config)
    model = build_tagger(config, len(vocabs.words), len(vocabs.chars), len(vocabs.tags))
    old = SavedTagger(source_dir)
    # Newer exports keep the weights only as the variables their functions use (``_all_variables``).
    copy_weights(list(old.saved_model.variables) or list(old.saved_model._all_variables), model)

    dev_record = metadata.get("data", {}).get("dev")
    dev = None
    if dev_record and Path(dev_record["path"]).is_file():
        dev = read_conllu(dev_record["path"], config.tag_column)
    previous = {k: v for k, v in metadata.items() if k not in ("version", "metrics", "libraries", "name")}
    new_metadata = {**previous, "reexport": {"from": str(source_dir), "from_version": metadata.get("version"),
                                             "command": command}}
    version, directory = export_tagger(model, vocabs, config, model_root, new_metadata, dev_sentences=dev)

    # The new export must answer as the old one did.
    sentences = [list(s.words) for s in dev[:500]] if dev else [["The", "dog", "barks", "."]]
    new = SavedTagger(directory)
    worst = max(float(np.abs(a.probabilities - b.probabilities).max())
                for a, b in zip(old.tag(sentences), new.tag(sentences)))
    logger.info("re-exported %s as %s: largest probability difference %.2g on %d sentences",
                source_dir, directory, worst, len(sentences))
    if worst > 1e-4:
        raise ValueError(f"the re-exported model disagrees with {source_dir} (max difference {worst:.3g})")
    return version, directory
