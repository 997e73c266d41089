"""The tagger model: shapes, masking (padding never changes real tokens' outputs), both char encoders."""

import numpy as np
import pytest

from training.tagger.config import TaggerConfig
from training.tagger.model import build_tagger


@pytest.mark.parametrize("char_encoder", ["bilstm", "cnn"])
def test_padding_does_not_change_outputs(char_encoder):
    config = TaggerConfig(word_dim=8, char_dim=4, char_hidden=4, hidden=8, layers=2, char_encoder=char_encoder)
    model = build_tagger(config, n_words=20, n_chars=20, n_tags=6)
    rng = np.random.default_rng(0)
    word_ids = rng.integers(1, 20, (1, 4)).astype(np.int32)
    char_ids = rng.integers(1, 20, (1, 4, 3)).astype(np.int32)
    char_ids[0, 1, 2] = 0  # a shorter word
    alone = np.asarray(model({"word_ids": word_ids, "char_ids": char_ids}))
    assert alone.shape == (1, 4, 6)
    np.testing.assert_allclose(alone.sum(-1), 1.0, rtol=1e-5)
    # The same sentence padded in time and in characters, as a longer batch-mate would pad it.
    padded = np.asarray(model({"word_ids": np.pad(word_ids, [[0, 0], [0, 5]]),
                               "char_ids": np.pad(char_ids, [[0, 0], [0, 5], [0, 4]])}))
    np.testing.assert_allclose(padded[:, :4], alone, atol=1e-6)


def test_parameter_count_follows_the_config():
    small = build_tagger(TaggerConfig(hidden=8, layers=1), 100, 30, 5).count_params()
    deeper = build_tagger(TaggerConfig(hidden=8, layers=2), 100, 30, 5).count_params()
    # one more BiLSTM(8) over the 16-wide output of the first: 2 directions x 4 gates x 8 x (16 + 8 + 1)
    assert deeper - small == 2 * 4 * 8 * (16 + 8 + 1)
