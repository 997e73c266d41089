"""Typed configuration of a dialog model (dialog acts or next system actions), saved with every exported model."""

from __future__ import annotations

from dataclasses import dataclass

from training.common.config import ConfigBase
from training.common.distribute import check_run_options
from training.common.errors import ConfigError
from training.common.tokenizer import DEFAULT_TOKENIZER, TOKENIZERS

DIALOG_TASKS = ("dialog-act", "dialog-action")
CLASSIFIER_INPUTS = ("state", "state+turn")


@dataclass
class DialogConfig(ConfigBase):
    """A dialog model: one label (dialog-act, softmax) or a set of labels (dialog-action, sigmoid) per turn."""

    # --- data ---
    task: str = "dialog-act"  # "dialog-act" (single-label) or "dialog-action" (multi-label, previous actions as input)
    min_word_count: int = 2  # words seen fewer times in train share the unknown-word embedding (pieces: are not kept)
    max_words: int = 40  # word positions per turn, the start-of-turn marker included (longer turns: truncated)
    tokenizer: str = DEFAULT_TOKENIZER  # how turn texts become words (training.common.tokenizer); serving reads the same
    # --- architecture ---
    word_dim: int = 100  # word embedding size
    utterance_hidden: int = 128  # units per direction of the utterance BiLSTM (max- and mean-pooled)
    speaker_dim: int = 8  # speaker embedding size
    turn_hidden: int = 256  # units of the causal turn-level LSTM
    # what the output layer sees: "state" (the turn LSTM's output) or "state+turn" (that and the turn's own
    # features, so the current utterance need not squeeze through the LSTM's gates to reach the classifier)
    classifier_input: str = "state"
    # pretrained word vectors (training.common.vectors), a second embedding beside the trained one in each turn
    vectors: str = ""  # "" (none), "glove-6b-50d", a word2vec/GloVe text file, a .npy matrix, a spaCy vectors dir
    vectors_top: int = 100000  # the table's first (most frequent) words kept beside the training words (-1: all)
    vectors_trainable: bool = False  # fine-tune the kept rows; False: frozen (and stored as float16 in the export)
    # A pretrained sentence encoder in place of the word embedding and BiLSTM (training.common.text_encoder): a
    # Hugging Face BERT directory (config.json, model.safetensors, tokenizer.json), e.g. all-MiniLM-L6-v2 as
    # sentence-transformers publish it. Turns are then read as its word pieces (max_words of them, [CLS] and [SEP]
    # included); the word and vector options above do not apply. Needs the [encoder] extra.
    utterance_encoder: str = ""
    encoder_layers: int = 3  # its first N transformer layers are kept (fewer: faster and smaller, see docs/training/encoders.md)
    encoder_licence: str = ""  # the encoder's licence, recorded in metadata.json (its directory does not say)
    encoder_dropout: float = 0.1  # inside the encoder (BERT's own rate)
    # Stage 1 (training.dialog.encoder_training): the encoder fine-tuned alone as a one-utterance classifier.
    encoder_epochs: int = 1
    encoder_learning_rate: float = 1e-4  # AdamW peak, after a linear warm-up, then linear decay to 5 %
    encoder_warmup: int = 200  # warm-up batches
    encoder_batch: int = 64  # utterances per batch (of similar length)
    encoder_weight_decay: float = 0.01
    dropout: float = 0.3  # on word embeddings, turn features and the turn LSTM's outputs
    word_dropout: float = 0.05  # probability of replacing a known training word by <unk>
    # --- run ---
    batch_turns: int = 1024  # turns per batch (whole dialogs of similar length)
    epochs: int = 30  # upper bound; early stopping usually ends sooner
    patience: int = 4  # epochs without dev improvement before stopping
    learning_rate: float = 1e-3  # Adam
    lr_decay_patience: int = 1  # epochs without dev improvement before halving the learning rate
    clipnorm: float = 5.0  # gradient clipping by global norm
    # Polyak averaging: dev is scored, and the best epoch kept, with an exponential moving average of the weights
    # (new = m * old + (1 - m) * weights, every batch); 0 turns it off. Its horizon is about 1 / (1 - m) batches.
    ema_momentum: float = 0.0
    seed: int = 1234  # Python, NumPy and backend seeds
    max_minutes: float = 0.0  # stop after the epoch that crosses this much training time (0: no limit)
    # --- devices (training.common.distribute) ---
    mixed_precision: str = "none"  # "float16" or "bfloat16": compute in it, float32 variables and outputs
    distribute: str = "none"  # "mirrored": tf.distribute over this machine's GPUs; batch sizes are per replica

    def __post_init__(self) -> None:
        if self.task not in DIALOG_TASKS:
            raise ConfigError(f"task must be one of {', '.join(DIALOG_TASKS)}, not {self.task!r}")
        for name in ("min_word_count", "word_dim", "utterance_hidden", "speaker_dim", "turn_hidden",
                     "batch_turns", "epochs", "encoder_layers", "encoder_epochs", "encoder_batch"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.classifier_input not in CLASSIFIER_INPUTS:
            raise ConfigError(f"classifier_input must be one of {', '.join(CLASSIFIER_INPUTS)}, not {self.classifier_input!r}")
        if self.tokenizer not in TOKENIZERS:
            raise ConfigError(f"tokenizer must be one of {', '.join(TOKENIZERS)}, not {self.tokenizer!r}")
        if self.max_words < 2:
            raise ConfigError(f"max_words must be >= 2 (the start-of-turn marker and a word), got {self.max_words}")
        if self.utterance_encoder and self.vectors:
            raise ConfigError("utterance_encoder and vectors exclude each other: the encoder reads word pieces")
        if self.encoder_learning_rate <= 0 or self.encoder_warmup < 0 or self.encoder_weight_decay < 0:
            raise ConfigError("encoder_learning_rate must be > 0, encoder_warmup and encoder_weight_decay >= 0")
        if self.utterance_encoder and self.max_words < 3:
            raise ConfigError(f"max_words must be >= 3 with an utterance encoder ([CLS], a piece, [SEP]), got {self.max_words}")
        for name in ("dropout", "word_dropout", "encoder_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0.0 <= self.ema_momentum < 1.0:
            raise ConfigError(f"ema_momentum must be in [0, 1), got {self.ema_momentum}")
        if self.max_minutes < 0 or self.learning_rate <= 0:
            raise ConfigError("max_minutes must be >= 0 and learning_rate > 0")
        check_run_options(self.mixed_precision, self.distribute)

    @property
    def multi_label(self) -> bool:
        return self.task == "dialog-action"

