"""The exported SavedModel: layout, versions, strings in, one tag per token for any batch/time shape.

The batch != time test is the regression test for Keras 3.14/3.15's TimeDistributed bug (an exported
model returning min(batch, time) steps); the encode test keeps serving's preprocessing identical to
training's.
"""

import numpy as np
import pytest
import tensorflow as tf

from training.common import artifacts
from training.common.saved_model import pad_tokens
from training.tagger.config import TaggerConfig
from training.tagger.data import read_conllu
from training.tagger.export import export_tagger
from training.tagger.model import build_tagger
from training.tagger.saved_tagger import SavedTagger
from training.tagger.vocab import TaggerVocabs, encode_words

from conftest import export_random_tagger


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """An untrained (random) model exported twice: versions 1 and 2."""
    root = tmp_path_factory.mktemp("models") / "pos"
    model, vocabs, config, v1, dir1 = export_random_tagger(root)
    v2, dir2 = export_tagger(model, vocabs, config, root, {"task": "pos"})
    return model, vocabs, config, root, (v1, dir1), (v2, dir2)


def test_versions_and_metadata(exported):
    model, vocabs, config, root, (v1, dir1), (v2, dir2) = exported
    assert (v1, v2) == (1, 2) and dir1 == root / "1" and dir2 == root / "2"
    assert artifacts.list_versions(root) == [1, 2]
    assert artifacts.resolve_model_dir(root) == dir2
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no staging leftovers
    metadata = artifacts.read_metadata(dir1)
    assert metadata["version"] == 1 and metadata["name"] == "pos" and metadata["kind"] == "tagger"
    assert metadata["labels"] == ["ADP", "DET", "NOUN", "NUM", "PUNCT", "VERB"]
    assert metadata["parameters"] == model.count_params()
    assert metadata["config"] == config.to_dict()
    assert metadata["libraries"]["keras"] == "3.13.2"


@pytest.mark.parametrize("shape", [(2, 7), (7, 2), (1, 1), (3, 30)])
def test_one_tag_per_token_whatever_batch_and_time(exported, shape):
    root = exported[3]
    loaded = tf.saved_model.load(str(root / "1"))
    batch, time = shape
    tokens = np.array([["dog"] * time for _ in range(batch)], dtype=object)
    tokens[0, time - 1:] = ""  # padding in the first row
    output = loaded.serve(tf.constant(tokens))
    assert tuple(output["tags"].shape) == shape
    assert tuple(output["probabilities"].shape) == (batch, time, 6)
    tags = output["tags"].numpy().astype(str)
    assert tags[0, time - 1] == ""  # padding gets no tag
    assert set(tags[tokens != ""].tolist()) <= {"ADP", "DET", "NOUN", "NUM", "PUNCT", "VERB"}
    scores = output["scores"].numpy()
    assert np.allclose(scores[tokens != ""], output["probabilities"].numpy().max(-1)[tokens != ""])


def test_exported_model_agrees_with_keras_model(exported):
    model, vocabs, config, root, _, _ = exported
    sentences = [["The", "dog", "sleeps", "."], ["A", "cat", "barks", "at", "noon", "!", "Zzz"]]
    tagger = SavedTagger(root / "1")
    encoded = [encode_words(s, vocabs, config.max_word_length) for s in sentences]
    for sentence, (word_ids, char_ids), result in zip(sentences, encoded, tagger.tag(sentences)):
        expected = model({"word_ids": word_ids[None], "char_ids": char_ids[None]}, training=False)[0]
        np.testing.assert_allclose(result.probabilities, np.asarray(expected), atol=1e-5)
        assert len(result.tags) == len(sentence)


@pytest.mark.parametrize("char_encoder", ["bilstm", "cnn"])
def test_serving_graph_agrees_with_keras_in_mixed_batches(ewt_slices, tmp_path, char_encoder):
    """Real sentences of mixed lengths padded into one unsorted batch: the serving graph's length-bucketed
    character encoder, reversed backward direction and masking give the Keras model's probabilities."""
    train = read_conllu(ewt_slices[0])
    sentences = [list(s.words) for s in read_conllu(ewt_slices[1])][:24:3]  # 8, of 1 to 42 words
    sentences.append(["a" * 30, "b", "Übermäßig", "?!"])  # a word longer than max_word_length, non-ASCII
    config = TaggerConfig(word_dim=8, char_dim=6, char_hidden=6, hidden=10, layers=2, max_word_length=12,
                          char_encoder=char_encoder)
    vocabs = TaggerVocabs.build(train, min_word_count=1)
    model = build_tagger(config, len(vocabs.words), len(vocabs.chars), len(vocabs.tags))
    _, directory = export_tagger(model, vocabs, config, tmp_path / "pos", {"task": "pos"})
    tokens = pad_tokens(sentences)
    tagger = SavedTagger(directory)  # kept alive: the function needs the loaded object's variables
    probabilities = tagger._serve(tf.constant(tokens))["probabilities"].numpy()
    for row, sentence in enumerate(sentences):
        word_ids, char_ids = encode_words(sentence, vocabs, config.max_word_length)
        expected = np.asarray(model({"word_ids": word_ids[None], "char_ids": char_ids[None]}, training=False)[0])
        np.testing.assert_allclose(probabilities[row, :len(sentence)], expected, atol=1e-5)


def test_serving_encodes_exactly_as_training(ewt_files, tmp_path):
    """Word and character ids from the SavedModel equal training's on real, messy text."""
    train = read_conllu(ewt_files[0])[:2000]
    dev = [list(s.words) for s in read_conllu(ewt_files[1])]
    dev.append(["İstanbul", "ÅNGSTRÖM", "ǅemal", "ﬁnance", "Σίσυφος", "2024-11-23", "🙂🙂", "a" * 40, "x\u0301"])
    config = TaggerConfig(max_word_length=20)
    vocabs = TaggerVocabs.build(train, config.min_word_count)
    model = build_tagger(config.replace(hidden=8, layers=1, word_dim=8), len(vocabs.words), len(vocabs.chars),
                         len(vocabs.tags))
    _, directory = export_tagger(model, vocabs, config, tmp_path / "pos", {"task": "pos"})
    tagger = SavedTagger(directory)
    for start in range(0, len(dev), 500):
        batch = dev[start:start + 500]
        word_ids, char_ids = tagger.encode(batch)
        for row, sentence in enumerate(batch):
            expected_words, expected_chars = encode_words(sentence, vocabs, config.max_word_length)
            assert word_ids[row, :len(sentence)].tolist() == expected_words.tolist(), sentence
            got = char_ids[row, :len(sentence), :expected_chars.shape[1]]
            assert got.tolist() == expected_chars.tolist(), sentence
            assert not char_ids[row, :len(sentence), expected_chars.shape[1]:].any()


def test_reexport_moves_weights_and_answers_the_same(tmp_path, ewt_slices):
    from training.cli import main

    train, dev = ewt_slices
    root = tmp_path / "pos"
    model, vocabs, config, _, source = export_random_tagger(root)
    metadata = artifacts.read_metadata(source)
    assert main(["export", "--from", str(source), "--out", str(root)]) == 0
    assert artifacts.list_versions(root) == [1, 2]
    new = artifacts.read_metadata(root / "2")
    assert new["reexport"]["from_version"] == 1 and new["reexport"]["command"].startswith("seqtag export --from")
    assert new["config"] == metadata["config"] and new["labels"] == metadata["labels"]
    sentences = [["The", "dog", "barks", "."], ["A", "cat", "!"]]
    for old, again in zip(SavedTagger(source).tag(sentences), SavedTagger(root / "2").tag(sentences)):
        np.testing.assert_array_equal(old.probabilities, again.probabilities)

    # A version without vocab.json: the vocabularies are rebuilt from its (unchanged) training file.
    (source / "vocab.json").unlink()
    with pytest.raises(Exception, match="no vocab.json"):
        from training.tagger.reexport import reexport
        reexport(source, root, "seqtag export")
