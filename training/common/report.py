"""Evaluation reports: learning curves and a confusion matrix as PNG (matplotlib, no display needed), the
per-label figures as a Markdown table, and ``report.md`` tying them together.

``seqtag evaluate --report DIR`` writes one for any data set; training writes one beside the model it
exports (``models/<name>/<version>/report/``, on the dev data).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

logger = logging.getLogger(__name__)

CONFUSION_LABELS = 25  # the most frequent gold labels in the confusion matrix (readable at this size)
SUMMARY_KEYS = ("accuracy", "f1", "precision", "recall", "macro_f1", "micro_f1", "exact_match", "spans", "tokens",
                "sentences", "utterances", "turns")


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only: works without a display
    import matplotlib.pyplot as plt

    return plt


def plot_learning_curves(history: Sequence[dict[str, Any]], path: Path) -> Path:
    """Training loss and dev score per epoch (``metadata.json``'s ``training.history``)."""
    plt = _plt()
    epochs = [record["epoch"] for record in history]
    figure, (loss_axis, dev_axis) = plt.subplots(1, 2, figsize=(10, 3.8))
    loss_axis.plot(epochs, [record["loss"] for record in history], marker="o")
    loss_axis.set(title="training loss", xlabel="epoch")
    dev_key = next(key for key in ("dev_score", "dev_span_f1", "dev_accuracy") if key in history[0])
    dev_axis.plot(epochs, [record[dev_key] for record in history], marker="o", color="tab:green")
    best = int(np.argmax([record[dev_key] for record in history]))
    dev_axis.annotate(f"best {history[best][dev_key]:.4f}", (epochs[best], history[best][dev_key]),
                      textcoords="offset points", xytext=(-30, -18))
    dev_axis.set(title=dev_key.replace('_', ' '), xlabel="epoch")
    for axis in (loss_axis, dev_axis):
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_confusion_matrix(gold: Sequence[str], predicted: Sequence[str], path: Path,
                          max_labels: int = CONFUSION_LABELS) -> Path:
    """Rows: gold labels (the most frequent ``max_labels``), normalised to 1; columns: predictions."""
    from sklearn.metrics import confusion_matrix

    plt = _plt()
    labels, counts = np.unique(np.asarray(gold, dtype=object), return_counts=True)
    labels = [str(label) for label in labels[np.argsort(-counts, kind="stable")][:max_labels]]
    matrix = confusion_matrix(gold, predicted, labels=labels).astype(float)
    matrix /= np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = max(5.0, 0.38 * len(labels) + 2)
    figure, axis = plt.subplots(figsize=(size + 1, size))
    image = axis.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
    axis.set_xticks(range(len(labels)), labels, rotation=90)
    axis.set_yticks(range(len(labels)), labels)
    axis.set(xlabel="predicted", ylabel="gold", title="confusion matrix (rows sum to 1)")
    if len(labels) <= 20:
        for i in range(len(labels)):
            for j in range(len(labels)):
                if matrix[i, j] >= 0.01:
                    axis.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=7,
                              color="white" if matrix[i, j] > 0.5 else "black")
    figure.colorbar(image, ax=axis, fraction=0.046)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def per_label_markdown(per_label: dict[str, dict[str, float]]) -> str:
    """One row per label, most frequent first: precision, recall, F1, support."""
    rows = sorted(per_label.items(), key=lambda item: (-item[1].get("support", 0), item[0]))
    lines = ["| label | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for label, scores in rows:
        f1 = scores.get("f1", scores.get("f1-score", 0.0))
        lines.append(f"| {label} | {scores['precision']:.3f} | {scores['recall']:.3f} | {f1:.3f} | "
                     f"{int(scores['support'])} |")
    return "\n".join(lines) + "\n"


def write_report(directory: Path, title: str, metrics: dict[str, Any], per_label: dict[str, dict[str, float]],
                 gold: Sequence[str] | None = None, predicted: Sequence[str] | None = None,
                 history: Sequence[dict[str, Any]] | None = None) -> Path:
    """Write ``report.md``, ``per_label.md`` and the PNGs into ``directory``; returns ``report.md``'s path.
    ``gold``/``predicted`` (single-label tasks) give the confusion matrix, ``history`` the learning curves."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = [f"# {title}", ""]
    for key in SUMMARY_KEYS:
        if metrics.get(key) is not None:
            value = metrics[key]
            lines.append(f"- **{key.replace('_', ' ')}**: {value:.4f}" if isinstance(value, float) else
                         f"- **{key.replace('_', ' ')}**: {value}")
    lines.append("")
    if history:
        plot_learning_curves(history, directory / "learning_curves.png")
        lines += ["## Learning curves", "", "![learning curves](learning_curves.png)", ""]
    if gold is not None and predicted is not None:
        plot_confusion_matrix(gold, predicted, directory / "confusion_matrix.png")
        lines += ["## Confusion matrix", "", "![confusion matrix](confusion_matrix.png)", ""]
    table = per_label_markdown(per_label)
    (directory / "per_label.md").write_text(table, encoding="utf-8")
    lines += ["## Per label", "", table]
    path = directory / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    logger.info("report written to %s", path)
    return path
