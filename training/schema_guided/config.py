"""The schema-guided span tagger's configuration: flat, commented defaults, saved with every checkpoint and export."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass
class SchemaSpanConfig:
    task: str = "schema-spans"
    tokenizer: str = "ud-english"  # cuts raw text into the words spans are made of
    encoder: str = ""  # a BERT directory (config.json, model.safetensors, tokenizer.json): all-MiniLM-L6-v2
    encoder_layers: int = 3  # its first layers kept, frozen (3 of 6 match 6 on dev's unseen services: 0.947 vs 0.947)
    encoder_licence: str = ""
    encoder_size: int = 384  # its hidden size (read from the encoder)
    max_pieces: int = 64  # word pieces per turn, [CLS] and [SEP] included; the rest is cut
    max_description_pieces: int = 64  # pieces of "name : description"
    min_piece_count: int = 2  # pieces kept in the export: seen this often in training text (and every ASCII character)
    # and the encoder vocabulary's first pieces (BERT's are roughly in frequency order): the words of a service that
    # training never saw keep their own pieces instead of falling apart into letters
    top_pieces: int = 12000
    hidden: int = 128  # BiLSTM units per direction
    match: int = 256  # the space words and slot descriptions meet in
    dropout: float = 0.2
    batch_size: int = 64  # turns
    epochs: int = 6
    learning_rate: float = 0.001
    train_dialogs: int = 0  # 0: all; else a seeded sample (the encoder pass is the cost)
    seed: int = 1234
    max_minutes: float = 0.0  # 0: no limit

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "SchemaSpanConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
