"""Config validation, vocabularies and id encoding, and the bucketed PyDataset."""

import numpy as np
import pytest

from training.common.errors import ConfigError
from training.common.vocab import PAD_ID, UNK_ID, normalize_word
from training.tagger.batching import BucketedBatches, EncodedSentence, pad_batch
from training.tagger.config import TaggerConfig
from training.tagger.data import TaggedSentence
from training.tagger.vocab import TaggerVocabs, encode_words


def test_config_rejects_unknown_and_invalid_options(tmp_path):
    with pytest.raises(ConfigError, match="unknown config option.*hiden"):
        TaggerConfig.from_dict({"hiden": 10})
    with pytest.raises(ConfigError, match="char_encoder"):
        TaggerConfig(char_encoder="transformer")
    with pytest.raises(ConfigError, match="dropout"):
        TaggerConfig(dropout=1.5)
    path = tmp_path / "config.json"
    path.write_text('{"hidden": 64, "layers": 1}')
    assert TaggerConfig.from_json_file(path).to_dict() == {**TaggerConfig().to_dict(), "hidden": 64, "layers": 1}
    path.write_text('{"hidden": 64, "colour": "blue"}')
    with pytest.raises(ConfigError, match="colour"):
        TaggerConfig.from_json_file(path)


def test_cli_rejects_unknown_option():
    from training.cli import main
    with pytest.raises(SystemExit) as caught:
        main(["train", "pos", "--train", "a", "--dev", "b", "--out", "c", "--hiden", "3"])
    assert caught.value.code == 2


def test_normalization_and_encoding():
    assert normalize_word("Year-2024") == "year-0000"
    sentences = [TaggedSentence(("The", "dog", "the", "cat"), ("DET", "NOUN", "DET", "NOUN"))]
    vocabs = TaggerVocabs.build(sentences, min_word_count=2)
    assert vocabs.words.items == ("", "<unk>", "the")  # "dog" and "cat" seen once: below min count
    assert vocabs.tags.items == ("DET", "NOUN")
    word_ids, char_ids = encode_words(["THE", "dog", "Zebra"], vocabs, max_word_length=3)
    assert word_ids.tolist() == [2, UNK_ID, UNK_ID]
    assert char_ids.shape == (3, 3)  # "Zebra" truncated to 3 characters
    assert char_ids[2].tolist() == [UNK_ID, vocabs.chars.id("e"), UNK_ID]  # "Z" and "b" never seen
    assert TaggerVocabs.from_dict(vocabs.to_dict()) == vocabs


def sentence(length, value=5):
    return EncodedSentence(np.full(length, value, np.int32), np.full((length, 2), 3, np.int32), np.zeros(length, np.int32))


def test_pad_batch_pads_with_zero_and_weights_only_real_tokens():
    inputs, tags, weights = pad_batch([sentence(2), sentence(4)])
    assert inputs["word_ids"].tolist() == [[5, 5, 0, 0], [5, 5, 5, 5]]
    assert inputs["char_ids"].shape == (2, 4, 2)
    assert weights.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]


def test_buckets_group_similar_lengths_and_the_first_two_batches_differ_on_every_axis():
    lengths = [3] * 40 + [4] * 8 + [9] * 8
    data = BucketedBatches([sentence(n) for n in lengths], batch_size=8, shuffle=True, seed=3)
    # each batch padded only to its own longest sentence (the second one may get one step more: see below)
    assert sorted(data.variable_shape(i)[0] for i in range(len(data))) == [3, 3, 3, 3, 3, 4, 9]
    for epoch in range(5):
        first, second = data[0][0], data[1][0]
        # TensorFlow freezes any axis on which the first two batches agree: time and characters both differ
        assert first["word_ids"].shape[1] != second["word_ids"].shape[1]
        assert first["char_ids"].shape[2] != second["char_ids"].shape[2]
        data.on_epoch_end()


def test_word_dropout_only_replaces_known_words():
    data = BucketedBatches([sentence(50)] * 4, batch_size=4, shuffle=True, word_dropout=0.5, seed=0)
    word_ids = data[0][0]["word_ids"]
    assert set(np.unique(word_ids)) == {UNK_ID, 5}
    unpadded = BucketedBatches([sentence(3), EncodedSentence(np.array([UNK_ID], np.int32), np.ones((1, 1), np.int32),
                                                             np.zeros(1, np.int32))], 2, shuffle=False, word_dropout=0.9)
    assert (unpadded[0][0]["word_ids"][0, 1:] == PAD_ID).all()  # padding is never touched


def test_rounded_padding_bounds_the_shapes_and_changes_no_output():
    """Under JAX, padded lengths are rounded up (``shape_multiple``) so that an epoch compiles a few shapes;
    the extra padding is masked like any other: the model's outputs for real tokens do not move."""
    from training.tagger.config import TaggerConfig
    from training.tagger.model import build_tagger

    lengths = [3, 5, 9, 11, 13, 17]
    plain = BucketedBatches([sentence(n) for n in lengths], batch_size=2, shuffle=False)
    rounded = BucketedBatches([sentence(n) for n in lengths], batch_size=2, shuffle=False, multiple=8)
    assert [plain[i][0]["word_ids"].shape[1] for i in range(3)] == [5, 11, 17]
    assert [rounded[i][0]["word_ids"].shape[1:] for i in range(3)] == [(8,), (16,), (24,)]
    # every word has 2 characters: the second batch is padded one multiple further on that axis (the guard)
    assert [rounded[i][0]["char_ids"].shape[2] for i in range(3)] == [8, 16, 8]
    assert [float(rounded[i][2].sum()) for i in range(3)] == [float(plain[i][2].sum()) for i in range(3)]
    model = build_tagger(TaggerConfig(word_dim=8, char_dim=4, char_hidden=4, hidden=8, layers=1), 10, 5, 4)
    for i in range(3):
        (inputs, _, weights), (rounded_inputs, _, _) = plain[i], rounded[i]
        width = weights.shape[1]
        expected = np.asarray(model.predict_on_batch(inputs))
        actual = np.asarray(model.predict_on_batch(rounded_inputs))[:, :width]
        real = weights > 0
        np.testing.assert_allclose(actual[real], expected[real], atol=1e-6)
