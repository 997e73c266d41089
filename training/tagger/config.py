"""Typed configuration of a token tagger: architecture and training run, saved with every exported model.

Defaults are the settings of the shipped ``models/pos`` model.
"""

from __future__ import annotations

from dataclasses import dataclass

from training.common.config import ConfigBase
from training.common.distribute import check_run_options
from training.common.errors import ConfigError
from training.common.tokenizer import DEFAULT_TOKENIZER, TOKENIZERS
from training.tagger.spans import SCHEMES


TASKS = ("pos", "spans")
CONDITIONS = ("none", "first-token", "embedding")


@dataclass
class TaggerConfig(ConfigBase):
    # --- task ---
    task: str = "pos"  # "pos": a tag per token from a CoNLL-U column; "spans": BIO/BIOES span tags (slots, entities)
    scheme: str = "bio"  # spans: "bio" or "bioes" (decoded with constrained Viterbi: never an I- that continues nothing)
    # spans: how a sentence's condition (an SGD turn's service) enters: "none"; "first-token": written as a first
    # token <service:NAME> that the BiLSTMs carry along; "embedding": an embedding of it beside every token
    condition: str = "none"
    condition_dim: int = 16  # "embedding": its size
    condition_dropout: float = 0.1  # share of training sentences whose condition is hidden, so a model serves without one
    tokenizer: str = DEFAULT_TOKENIZER  # spans from raw text (SGD utterances): how they become tokens
    # --- data ---
    tag_column: str = "upos"  # which CoNLL-U column to tag: "upos" or "xpos"
    min_word_count: int = 2  # words seen fewer times in train share the unknown-word embedding
    max_word_length: int = 20  # characters kept per word for the character encoder (longer: truncated)
    # --- architecture ---
    word_dim: int = 100  # word embedding size
    char_dim: int = 50  # character embedding size
    char_encoder: str = "bilstm"  # "bilstm" or "cnn": how a word's characters become one vector
    char_hidden: int = 100  # per direction (bilstm) or number of filters (cnn)
    hidden: int = 192  # units per direction of each sentence-level BiLSTM layer
    layers: int = 2  # stacked sentence-level BiLSTM layers
    dropout: float = 0.4  # on embeddings and between BiLSTM layers
    word_dropout: float = 0.1  # probability of replacing a known training word by <unk>
    # --- pretrained word vectors (training.common.vectors), a second embedding beside the trained one ---
    vectors: str = ""  # "" (none), "glove-6b-50d", a word2vec/GloVe text file, a .npy matrix, a spaCy vectors dir
    vectors_top: int = 100000  # the table's first (most frequent) words kept beside the training words (-1: all)
    vectors_trainable: bool = False  # fine-tune the kept rows; False: frozen (and stored as float16 in the export)
    # --- run ---
    batch_size: int = 32  # sentences per batch (buckets of similar length)
    epochs: int = 40  # upper bound; early stopping usually ends sooner
    patience: int = 5  # epochs without dev improvement before stopping
    learning_rate: float = 2e-3  # Adam
    lr_decay_patience: int = 2  # epochs without dev improvement before halving the learning rate
    clipnorm: float = 5.0  # gradient clipping by global norm
    seed: int = 1234  # Python, NumPy and backend seeds
    max_minutes: float = 0.0  # stop after the epoch that crosses this much training time (0: no limit)
    # --- devices (training.common.distribute) ---
    mixed_precision: str = "none"  # "float16" or "bfloat16": compute in it, float32 variables and outputs
    distribute: str = "none"  # "mirrored": tf.distribute over this machine's GPUs; batch sizes are per replica

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for name, known in (("task", TASKS), ("scheme", SCHEMES), ("condition", CONDITIONS), ("tokenizer", TOKENIZERS)):
            if getattr(self, name) not in known:
                raise ConfigError(f"{name} must be one of {', '.join(known)}, not {getattr(self, name)!r}")
        if self.task == "pos" and self.condition != "none":
            raise ConfigError("a condition is for span models (task spans)")
        if not 0.0 <= self.condition_dropout < 1.0:
            raise ConfigError(f"condition_dropout must be in [0, 1), got {self.condition_dropout}")
        if self.tag_column not in ("upos", "xpos"):
            raise ConfigError(f"tag_column must be 'upos' or 'xpos', not {self.tag_column!r}")
        if self.char_encoder not in ("bilstm", "cnn"):
            raise ConfigError(f"char_encoder must be 'bilstm' or 'cnn', not {self.char_encoder!r}")
        for name in ("min_word_count", "max_word_length", "word_dim", "char_dim", "char_hidden",
                     "hidden", "layers", "batch_size", "epochs", "condition_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("dropout", "word_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.max_minutes < 0:
            raise ConfigError(f"max_minutes must be >= 0, got {self.max_minutes}")
        if not isinstance(self.vectors_trainable, bool):
            raise ConfigError(f"vectors_trainable must be true or false, got {self.vectors_trainable!r}")
        if self.learning_rate <= 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")
        check_run_options(self.mixed_precision, self.distribute)
