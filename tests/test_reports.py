"""Training reports: after ``seqtag train`` a ``report/`` beside the model (learning curves and a confusion
matrix as PNG, per-label Markdown), the same from ``seqtag evaluate --report DIR`` for any data, and
``--tensorboard DIR`` logs."""

import collections
import re

from training.cli import main
from training.tagger.data import read_conllu

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def is_png(path) -> bool:
    data = path.read_bytes()
    return data[:8] == PNG_SIGNATURE and len(data) > 5_000


def per_label_rows(path) -> dict[str, tuple[float, int]]:
    """label -> (F1, support) from a per_label.md table."""
    rows = {}
    for line in path.read_text().splitlines()[2:]:
        label, _, _, f1, support = [cell.strip() for cell in line.strip("|").split("|")]
        rows[label] = (float(f1), int(support))
    return rows


def test_training_writes_a_report_beside_the_model(tiny_model_root, ewt_slices):
    report = tiny_model_root / "1" / "report"
    assert is_png(report / "learning_curves.png") and is_png(report / "confusion_matrix.png")
    rows = per_label_rows(report / "per_label.md")
    gold = collections.Counter(t for s in read_conllu(ewt_slices[1]) for t in s.tags)
    assert {label: support for label, (_, support) in rows.items() if support} == dict(gold)
    assert list(rows) == sorted(rows, key=lambda label: (-rows[label][1], label))  # most frequent first
    text = (report / "report.md").read_text()
    assert "![confusion matrix](confusion_matrix.png)" in text and "| label | precision |" in text


def test_evaluate_report_on_any_data(tiny_model_root, ewt_slices, tmp_path, capsys):
    train, _ = ewt_slices
    out = tmp_path / "report"
    assert main(["evaluate", "--model", str(tiny_model_root), "--data", str(train), "--report", str(out), "--json"]) == 0
    printed = capsys.readouterr().out
    accuracy = float(re.search(r'"accuracy": ([0-9.]+)', printed).group(1))
    assert f"**accuracy**: {accuracy:.4f}" in (out / "report.md").read_text()
    assert is_png(out / "confusion_matrix.png")
    supports = {label: support for label, (_, support) in per_label_rows(out / "per_label.md").items()}
    assert sum(supports.values()) == sum(len(s.words) for s in read_conllu(train))
    assert '"gold"' not in printed  # the predictions feed the report, not the printed figures


def test_tensorboard_logs(tiny_model_root):
    """``seqtag train pos --tensorboard DIR`` (the ``tiny_model_root`` run) writes event files there."""
    logs = tiny_model_root.parent / "tensorboard"
    assert list(logs.rglob("events.out.tfevents.*"))
