"""A tiny BERT written by the tests, laid out as Hugging Face publishes one, and a NumPy forward pass of it.

``write_tiny_bert`` writes ``config.json``, ``tokenizer.json`` (a WordPiece tokenizer made with the ``tokenizers``
library, BERT's normalizer and pre-tokenizer) and ``model.safetensors`` (random weights, named as
``transformers`` names a ``BertModel``'s). ``reference_pooled`` is the published architecture written out in NumPy
(post-LayerNorm blocks, padding masked out of attention, then sentence-transformers' mean pool), the reference the
Keras port is held to. GELU: ``transformers``' "gelu" is the exact (erf) one; keras-hub's ``BertBackbone`` uses its
tanh approximation (as Google's original BERT did), which moves outputs by about 1e-4. The reference computes
either, so the port is checked exactly against the network keras-hub builds and within that gap of the published one.
"""

from __future__ import annotations

import json
import math
import string
from pathlib import Path

import numpy as np

WHOLE_PIECES = ["do", "you", "have", "any", "pets", "yes", "two", "cat", "oh", "nice", "uh", "huh", "what",
                "think", "about", "the", "weather", "it", "has", "been", "awful", "yeah", "hi", "there", "we", "##ther"]
# ("##s" is a single-character piece, among the singles.)


def tiny_vocabulary() -> list[str]:
    singles = [c for c in string.ascii_lowercase + string.digits + string.punctuation]
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *singles, *("##" + c for c in singles), "é", *WHOLE_PIECES]


def write_tiny_bert(folder: Path, *, layers: int = 2, hidden: int = 8, heads: int = 2, intermediate: int = 16,
                    positions: int = 40, seed: int = 0, prefixed: bool = False) -> Path:
    from safetensors.numpy import save_file
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordPiece

    folder.mkdir(parents=True, exist_ok=True)
    vocabulary = tiny_vocabulary()
    tokenizer = Tokenizer(WordPiece({piece: i for i, piece in enumerate(vocabulary)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.save(str(folder / "tokenizer.json"))
    config = {"model_type": "bert", "architectures": ["BertModel"], "_name_or_path": "tests/tiny-bert", "hidden_act": "gelu",
              "hidden_size": hidden, "num_attention_heads": heads, "intermediate_size": intermediate,
              "num_hidden_layers": layers, "max_position_embeddings": positions, "vocab_size": len(vocabulary),
              "type_vocab_size": 2, "layer_norm_eps": 1e-12}
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    rng = np.random.default_rng(seed)

    def normal(*shape):
        return (0.3 * rng.standard_normal(shape)).astype(np.float32)

    tensors = {"embeddings.word_embeddings.weight": normal(len(vocabulary), hidden),
               "embeddings.position_embeddings.weight": normal(positions, hidden),
               "embeddings.token_type_embeddings.weight": normal(2, hidden),
               "embeddings.LayerNorm.weight": 1 + normal(hidden), "embeddings.LayerNorm.bias": normal(hidden),
               "pooler.dense.weight": normal(hidden, hidden), "pooler.dense.bias": normal(hidden)}
    for i in range(layers):
        prefix = f"encoder.layer.{i}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            tensors[f"{prefix}{name}.weight"], tensors[f"{prefix}{name}.bias"] = normal(hidden, hidden), normal(hidden)
        tensors[f"{prefix}intermediate.dense.weight"], tensors[f"{prefix}intermediate.dense.bias"] = normal(intermediate, hidden), normal(intermediate)
        tensors[f"{prefix}output.dense.weight"], tensors[f"{prefix}output.dense.bias"] = normal(hidden, intermediate), normal(hidden)
        for name in ("attention.output.LayerNorm", "output.LayerNorm"):
            tensors[f"{prefix}{name}.weight"], tensors[f"{prefix}{name}.bias"] = 1 + normal(hidden), normal(hidden)
    save_file({("bert." if prefixed else "") + k: v for k, v in tensors.items()}, str(folder / "model.safetensors"))
    return folder


def reference_pooled(folder: Path, ids: np.ndarray, layers: int, approximate_gelu: bool = True) -> np.ndarray:
    """Published piece ids ``[N, W]`` (0 pads) -> the mean-pooled output of the first ``layers`` layers ``[N, hidden]``."""
    from safetensors.numpy import load_file

    t = {k.removeprefix("bert."): v.astype(np.float64) for k, v in load_file(str(folder / "model.safetensors")).items()}
    config = json.loads((folder / "config.json").read_text())
    heads, hidden = config["num_attention_heads"], config["hidden_size"]
    size = hidden // heads
    erf = np.vectorize(math.erf)

    def norm(x, name):
        mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + config["layer_norm_eps"]) * t[name + ".weight"] + t[name + ".bias"]

    def linear(x, name):
        return x @ t[name + ".weight"].T + t[name + ".bias"]

    def split(x):  # [N, W, hidden] -> [N, heads, W, size]
        return x.reshape(x.shape[0], x.shape[1], heads, size).transpose(0, 2, 1, 3)

    n, w = ids.shape
    mask = ids != 0
    x = t["embeddings.word_embeddings.weight"][ids] + t["embeddings.position_embeddings.weight"][:w] \
        + t["embeddings.token_type_embeddings.weight"][0]
    x = norm(x, "embeddings.LayerNorm")
    for i in range(layers):
        p = f"encoder.layer.{i}."
        q, k, v = (split(linear(x, p + f"attention.self.{name}")) for name in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(size) + np.where(mask[:, None, None, :], 0.0, -1e9)
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        context = (weights @ v).transpose(0, 2, 1, 3).reshape(n, w, hidden)
        x = norm(x + linear(context, p + "attention.output.dense"), p + "attention.output.LayerNorm")
        inner = linear(x, p + "intermediate.dense")
        if approximate_gelu:
            inner = 0.5 * inner * (1 + np.tanh(math.sqrt(2 / math.pi) * (inner + 0.044715 * inner ** 3)))
        else:
            inner = 0.5 * inner * (1 + erf(inner / math.sqrt(2)))
        x = norm(x + linear(inner, p + "output.dense"), p + "output.LayerNorm")
    m = mask[..., None]
    return (x * m).sum(1) / np.maximum(m.sum(1), 1)
