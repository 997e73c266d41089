"""The shipped ``models/pos``: complete metadata, size limit, sensible tags, and the dev accuracy target."""

import json

import numpy as np
import pytest
import tensorflow as tf

from training.cli import main
from training.common import artifacts

from conftest import EWT_DEV, EWT_TRAIN, REPO

POS_ROOT = REPO / "models" / "pos"
UPOS = ["ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN", "PUNCT",
        "SCONJ", "SYM", "VERB", "X"]


@pytest.fixture(scope="module")
def model_dir():
    return artifacts.resolve_model_dir(POS_ROOT)


def test_metadata_is_complete(model_dir):
    metadata = artifacts.read_metadata(model_dir)
    assert metadata["name"] == "pos" and metadata["version"] == int(model_dir.name) and metadata["kind"] == "tagger"
    assert metadata["labels"] == UPOS
    assert metadata["command"].startswith("seqtag train pos ")
    assert metadata["metrics"]["dev"]["accuracy"] >= 0.950
    assert metadata["libraries"]["keras"] == "3.13.2" and metadata["libraries"]["tensorflow"].startswith("2.21")
    assert metadata["parameters"] > 0 and metadata["training"]["best_epoch"] >= 1
    for split, path in (("train", EWT_TRAIN), ("dev", EWT_DEV)):
        record = metadata["data"][split]
        assert len(record["sha256"]) == 64
        if path.is_file():
            assert record["sha256"] == artifacts.sha256_file(path), f"{split} data changed since training"


SHIPPED_VERSIONS = sorted(path for path in (REPO / "models").glob("*/*") if (path / "metadata.json").is_file())


@pytest.mark.parametrize("version_dir", SHIPPED_VERSIONS, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_every_shipped_version_fits_its_size_limit(version_dir):
    """15 MB a version, 25 MB when a pretrained vector table or a pretrained encoder rides inside (decimal
    megabytes, the stricter reading); such a table names its package and licence, such an encoder its weights'
    sha256 and licence."""
    size = sum(p.stat().st_size for p in version_dir.rglob("*") if p.is_file())
    metadata = artifacts.read_metadata(version_dir)
    vectors, encoder = metadata.get("vectors") or {}, metadata.get("encoder") or {}
    if vectors.get("kept_rows"):
        assert vectors["licence"] and vectors["package"] and len(vectors["sha256"]) == 64
        assert size < 25_000_000, size
    elif encoder:
        assert encoder["licence"] != "not stated" and len(encoder["sha256"]) == 64
        assert size < 25_000_000, size
    else:
        assert size < 15_000_000, size


def test_each_model_keeps_its_serving_version_and_one_for_rollback():
    for root in sorted(path for path in (REPO / "models").iterdir() if path.is_dir()):
        assert 1 <= len(artifacts.list_versions(root)) <= 2, root


def test_tags_a_sentence_and_any_batch_shape(model_dir):
    model = tf.saved_model.load(str(model_dir))
    output = model.serve(tf.constant([["The", "dog", "is", "sleeping", "."], ["I", "do", "n't", "know", ""]]))
    assert output["tags"].numpy().astype(str).tolist() == [["DET", "NOUN", "AUX", "VERB", "PUNCT"],
                                                           ["PRON", "AUX", "PART", "VERB", ""]]
    for batch, time in ((2, 9), (9, 2)):
        tokens = np.full((batch, time), "word", dtype=object)
        assert tuple(model.serve(tf.constant(tokens))["tags"].shape) == (batch, time)


def test_dev_accuracy_target(ewt_files, capsys):
    assert main(["evaluate", "--model", str(POS_ROOT), "--data", str(ewt_files[1]), "--format", "conllu", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["tokens"] == 25147  # the words of EWT v2.16 dev, multiword tokens and empty nodes left out
    assert result["accuracy"] >= 0.950, result["accuracy"]
