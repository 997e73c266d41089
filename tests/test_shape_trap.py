"""Training never depends on the first batches' shapes (TensorFlow's ``PyDataset`` trap).

Under TensorFlow, ``fit`` reads input shapes off the first two batches and freezes every axis on which they
agree. The data here is built to hit that on every variable axis: the first two batches (in the order the
trainer's seeded shuffle puts them) agree on time and characters per word (sentences), or on turns per dialog
and words per turn (dialogs), and a later batch differs on each. ``seqtag train`` must finish on it.
"""

from __future__ import annotations

import json

import numpy as np

from training.cli import main
from training.common.vocab import PAD_ID
from training.dialog.batching import DialogBatches
from training.dialog.config import DialogConfig
from training.dialog.data import read_dialogs
from training.dialog.trainer import encode_dialogs, tokenize_dialogs
from training.dialog.vocab import DialogVocabs
from training.tagger.batching import BucketedBatches
from training.tagger.config import TaggerConfig
from training.tagger.data import TaggedSentence, read_conllu
from training.tagger.trainer import encode_sentences
from training.tagger.vocab import TaggerVocabs

TINY_TAGGER = ["--word-dim", "8", "--char-dim", "4", "--char-hidden", "4", "--hidden", "8", "--layers", "1",
               "--batch-size", "4", "--epochs", "2", "--quiet"]
TINY_DIALOG = ["--word-dim", "8", "--utterance-hidden", "4", "--turn-hidden", "8", "--batch-turns", "12",
               "--epochs", "2", "--quiet"]


def conllu(sentences: list[list[tuple[str, str]]]) -> str:
    blocks = []
    for i, words in enumerate(sentences, start=1):
        lines = [f"# sent_id = {i}"] + [f"{j}\t{w}\t_\t{t}\t_\t_\t0\t_\t_\t_" for j, (w, t) in enumerate(words, start=1)]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n\n"


def trap_sentences() -> list[list[tuple[str, str]]]:
    """Many sentences of 3 words whose longest word has 12 characters; a few of 5 words with an 11-character
    longest word (the shape of the issue's crash: (32, 6, 11) after two batches of (..., 12))."""
    common = [[("supermarkets", "NOUN"), ("are", "AUX"), ("open", "ADJ")] for _ in range(36)]
    odd = [[("a", "DET"), ("wonderfully", "ADV"), ("quiet", "ADJ"), ("day", "NOUN"), (".", "PUNCT")]
           for _ in range(4)]
    return common + odd


def tagger_batches(seed: int) -> BucketedBatches:
    """The training batches ``seqtag train pos --batch-size 4 --seed SEED`` makes of the trap sentences."""
    config = TaggerConfig(batch_size=4, seed=seed)
    sentences = [TaggedSentence(tuple(w for w, _ in s), tuple(t for _, t in s)) for s in trap_sentences()]
    vocabs = TaggerVocabs.build(sentences, 1)
    return BucketedBatches(encode_sentences(sentences, vocabs, config), config.batch_size, shuffle=True,
                           seed=config.seed)


def trap_seed(make_batches, shape) -> int:
    """A seed whose shuffled order puts two batches of ``shape`` first (most seeds do)."""
    return next(seed for seed in range(1, 100) if make_batches(seed).variable_shape(0) == shape
                and make_batches(seed).variable_shape(1) == shape)


def test_shape_guard_leaves_every_axis_unknown_for_fit():
    """The premise, then the guard: the shuffled order puts two same-shaped batches first, and the guard pads
    the second one step further on each axis, so TensorFlow sees every axis as variable."""
    batches = tagger_batches(trap_seed(tagger_batches, (3, 12)))
    natural = [batches.variable_shape(i) for i in range(len(batches))]
    assert natural[0] == natural[1] == (3, 12)  # the trap: the first two agree on time and characters
    assert (5, 11) in natural[2:]  # and a later batch differs on both
    first, second = batches[0][0], batches[1][0]
    assert first["char_ids"].shape[1:] == (3, 12) and second["char_ids"].shape[1:] == (4, 13)
    assert (second["word_ids"][:, 3] == PAD_ID).all()  # the extra step is padding, weighted 0
    assert (batches[1][2][:, 3] == 0).all()


def test_train_pos_finishes_on_data_built_to_hit_the_shape_trap(tmp_path):
    train = tmp_path / "trap.conllu"
    train.write_text(conllu(trap_sentences()), encoding="utf-8")
    seed = trap_seed(tagger_batches, (3, 12))
    code = main(["train", "pos", "--train", str(train), "--dev", str(train), "--out", str(tmp_path / "pos"),
                 "--checkpoint", str(tmp_path / "checkpoint"), "--seed", str(seed), *TINY_TAGGER])
    assert code == 0
    assert (tmp_path / "pos" / "1" / "saved_model.pb").is_file()
    assert read_conllu(train)  # the file was the trap, read as written


def trap_dialogs() -> list[dict]:
    """Dialogs of 2 turns of 4 words, and a few of 5 turns of 7 words."""
    short = [{"id": f"s{i}", "turns": [{"speaker": "A", "text": "one two three four", "label": "x"},
                                        {"speaker": "B", "text": "five six seven eight", "label": "y"}]}
             for i in range(30)]
    long = [{"id": f"l{i}", "turns": [{"speaker": "A", "text": "a b c d e f g", "label": "x"}] * 5}
            for i in range(4)]
    return short + long


def test_train_dialog_finishes_on_data_built_to_hit_the_shape_trap(tmp_path):
    path = tmp_path / "trap.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in trap_dialogs()), encoding="utf-8")
    dialogs = read_dialogs(path, "jsonl")

    def dialog_batches(seed: int) -> DialogBatches:  # as seqtag train dialog-act --batch-turns 12 --seed SEED
        config = DialogConfig(batch_turns=12, seed=seed)
        tokens = tokenize_dialogs(dialogs, config.tokenizer)
        vocabs = DialogVocabs.build(dialogs, tokens, 1)
        return DialogBatches(encode_dialogs(dialogs, tokens, vocabs, config), config.batch_turns, False,
                             shuffle=True, seed=config.seed)

    seed = trap_seed(dialog_batches, (2, 5))
    batches = dialog_batches(seed)
    natural = [batches.variable_shape(i) for i in range(len(batches))]
    assert natural[0] == natural[1] == (2, 5)  # turns and words (the start marker + 4) agree
    assert any(turns != 2 and words != 5 for turns, words in natural[2:])
    second = batches[1][0]
    assert second["word_ids"].shape[1:] == (3, 6) and (second["speaker_ids"][:, 2] == PAD_ID).all()

    code = main(["train", "dialog-act", "--train", str(path), "--dev", str(path), "--format", "jsonl",
                 "--out", str(tmp_path / "act"), "--checkpoint", str(tmp_path / "checkpoint"), "--seed", str(seed),
                 *TINY_DIALOG])
    assert code == 0
    metadata = json.loads((tmp_path / "act" / "1" / "metadata.json").read_text())
    assert metadata["tokenizer"] == "ud-english" and np.isfinite(metadata["metrics"]["dev"]["accuracy"])
