"""One turn of an encoder dialog model against what a user would run instead: the same BERT in PyTorch.

    PYTHONPATH=DIR_WITH_TRANSFORMERS .venv/bin/python -m benchmarks.encoder_peer --version models/dialog-act/3 \
        --encoder all-MiniLM-L6-v2/ --dialogs 6 --rounds 5

The peer is Hugging Face ``transformers``' ``BertModel`` on PyTorch (the ``backends`` extra has torch;
``transformers`` is not a dependency of this project: put it on PYTHONPATH), cut to the version's encoder layers, one
thread, ``torch.inference_mode``: it encodes each turn (the encoder's own tokenizer, [CLS] ... [SEP], mean pool) and
nothing more. Ours is the whole turn as the service steps it (``SavedDialogModel(runtime="onnx").step``: pieces,
the encoder, the turn LSTM and the classifier), from words already tokenized, one session. The same SwDA val turns go
through both, the two taking turns round after round; printed: p50 and p99 per turn over all rounds, the median of
the rounds' p50, and the ratio of ours to the peer's.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

import numpy as np

from benchmarks.dialog_step import add_stream_options, stream_times
from training.common import artifacts
from training.dialog.data import read_dialogs
from training.dialog.evaluate import dialog_inputs
from training.dialog.saved_dialog import SavedDialogModel

logger = logging.getLogger("benchmarks.encoder_peer")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", required=True, help="an encoder model's version directory (models/<name>/<n>)")
    parser.add_argument("--encoder", required=True, help="the published encoder directory it was trained from")
    add_stream_options(parser, dialogs=6)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    import torch
    from transformers import AutoTokenizer, BertModel

    torch.set_num_threads(1)
    ours = SavedDialogModel(args.version, runtime="onnx")
    layers = int(artifacts.read_metadata(args.version)["encoder"]["layers"].split()[1])  # "first 3 of 6"
    peer = BertModel.from_pretrained(args.encoder, num_hidden_layers=layers, add_pooling_layer=False).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.encoder)
    dialogs = read_dialogs(args.data, args.format)[:args.dialogs]
    conversations = [dialog_inputs(d, False, ours.tokenizer) for d in dialogs]
    texts = [turn.text for d in dialogs for turn in d.turns]

    def run_ours() -> list[float]:
        return stream_times(ours, conversations)

    def run_peer() -> list[float]:
        times = []
        with torch.inference_mode():
            for text in texts:
                start = time.perf_counter()
                encoded = tokenizer(text, truncation=True, max_length=32, return_tensors="pt")
                hidden = peer(**encoded).last_hidden_state
                mask = encoded["attention_mask"].unsqueeze(-1)
                (hidden * mask).sum(1) / mask.sum(1)
                times.append(time.perf_counter() - start)
        return times

    run_ours(), run_peer()  # warm up
    times = {"ours": [], "peer": []}
    rounds = {"ours": [], "peer": []}
    for _ in range(args.rounds):
        for name, run in (("ours", run_ours), ("peer", run_peer)):
            measured = run()
            times[name] += measured
            rounds[name].append(statistics.median(measured))
    print(f"one turn, batch 1, one thread, {len(texts)} SwDA turns x {args.rounds} rounds, alternating")
    print(f"{'':44} {'p50 ms':>8} {'p99 ms':>8} {'median of round p50':>20}")
    labels = {"ours": f"seqtag {args.version} step (ONNX)", "peer": f"PyTorch BertModel, {layers} layers, encode only"}
    for name in ("ours", "peer"):
        values = np.array(times[name]) * 1e3
        print(f"{labels[name]:44} {np.percentile(values, 50):8.3f} {np.percentile(values, 99):8.3f} "
              f"{statistics.median(rounds[name]) * 1e3:20.3f}")
    print(f"ours / peer (median of round p50): {statistics.median(rounds['ours']) / statistics.median(rounds['peer']):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
