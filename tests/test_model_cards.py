"""Model cards (``seqtag cards``, ``training/model_cards.py``): the committed cards are up to date, a card says what
its metadata says, and ``--check`` names every stale, missing or extra card. Reads JSON only: no TensorFlow."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from training import model_cards
from training.cli import main

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
CARDS = REPO / "docs" / "models"


def copy_version(source: Path, root: Path, name: str | None = None, number: int | None = None) -> Path:
    """A shipped version's metadata.json and report/ (no SavedModel) as ``root/<name>/<number>``."""
    target = root / (name or source.parent.name) / str(number or source.name)
    target.mkdir(parents=True)
    shutil.copy(source / "metadata.json", target / "metadata.json")
    shutil.copytree(source / "report", target / "report")
    return target


def cards(models: Path, out: Path, *extra: str, speed: Path | None = None) -> int:
    return main(["cards", "--models", str(models), "--out", str(out), "--speed", str(speed or out / "speed.json"), *extra])


def shell_words(script: str) -> list[str]:
    """The words a shell reads in ``script`` (a backslash before a newline continues the line)."""
    return shlex.split(script.replace("\\\n", " "))


def sh_blocks(card: str) -> list[list[str]]:
    """The words of every ```sh block of a card."""
    return [shell_words(block) for block in re.findall(r"```sh\n(.*?)\n```", card, flags=re.S)]


def test_committed_cards_are_up_to_date(capsys):
    status = cards(MODELS, CARDS, "--check", speed=CARDS / "speed.json")
    assert status == 0, capsys.readouterr().err
    for name in [p.name for p in MODELS.iterdir() if p.is_dir()]:
        assert (CARDS / f"{name}.md").is_file()


def test_check_imports_no_tensorflow():
    code = ("import sys; from training.cli import main; "
            f"status = main(['cards', '--check', '--models', {str(MODELS)!r}, '--out', {str(CARDS)!r}, "
            f"'--speed', {str(CARDS / 'speed.json')!r}]); "
            "print(sorted(m for m in ('tensorflow', 'keras', 'numpy', 'sklearn') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stderr


@pytest.mark.parametrize("shipped", ["pos/4", "slots/1", "dialog-act/3", "dialog-action/4"])
def test_card_shows_metrics_commands_and_labels(tmp_path, shipped):
    source = MODELS / shipped
    copy_version(source, tmp_path / "models")
    out = tmp_path / "docs"
    assert cards(tmp_path / "models", out) == 0
    name = source.parent.name
    card = (out / f"{name}.md").read_text()
    metadata = json.loads((source / "metadata.json").read_text())
    assert card.startswith(model_cards.HEADER_START)
    dev = metadata["metrics"]["dev"]
    for key in ("accuracy", "micro_f1", "f1", "macro_f1", "exact_match"):
        if key in dev:
            assert f"{dev[key]:.4f}" in card
    scores = dev.get("per_label") or dev["per_tag"]
    for label, figures in scores.items():
        f1 = figures.get("f1", figures.get("f1-score"))
        assert f"| `{label}` |" in card and f"{f1:.3f}" in card
    if len(scores) > model_cards.PER_LABEL_COLLAPSED_OVER:  # hundreds of labels: a collapsed admonition
        assert f'??? note "All {len(scores)} labels"\n\n    | label |' in card
    commands = [member["command"] for member in metadata.get("ensemble", [])] or [metadata["command"]]
    commands.append(metadata.get("export_command") or metadata["command"])
    blocks = sh_blocks(card)
    for command in commands:  # exactly the recorded words, however the block wraps them
        assert shlex.split(command) in blocks
    assert "serving" in card and f"`models/{shipped}/report/`" in card
    assert "Speed: not measured" in card  # no speed.json here
    allowed = {model_cards.SPEED_PAGE, model_cards.VECTORS_PAGE, model_cards.ENCODERS_PAGE,
               *model_cards.TRAINING_PAGES.values()}
    for link in re.findall(r"\]\(([^)]+)\)", card):  # links stay inside docs/: the pages named, nothing else
        assert link in allowed, link
    index = (out / "index.md").read_text()
    assert f"[{name}]({name}.md)" in index


def test_card_is_deterministic_and_independent_of_where_it_runs(tmp_path):
    for place in ("a", "b/c"):
        copy_version(MODELS / "pos" / "4", tmp_path / place / "models")
        copy_version(MODELS / "pos" / "3", tmp_path / place / "models")
        assert cards(tmp_path / place / "models", tmp_path / place / "docs") == 0
    for page in ("pos.md", "index.md"):
        assert (tmp_path / "a" / "docs" / page).read_text() == (tmp_path / "b/c" / "docs" / page).read_text()
    card = (tmp_path / "a" / "docs" / "pos.md").read_text()
    assert card.index("## Version 4 (serving)") < card.index("## Version 3 (rollback)")
    assert cards(tmp_path / "a" / "models", tmp_path / "a" / "docs", "--check") == 0


def test_changed_metric_makes_check_fail_naming_the_card(tmp_path, capsys):
    version = copy_version(MODELS / "pos" / "4", tmp_path / "models")
    out = tmp_path / "docs"
    assert cards(tmp_path / "models", out) == 0
    metadata = json.loads((version / "metadata.json").read_text())
    metadata["metrics"]["dev"]["accuracy"] = 0.5
    (version / "metadata.json").write_text(json.dumps(metadata))
    capsys.readouterr()
    before = {p.name: p.read_text() for p in out.glob("*.md")}
    assert cards(tmp_path / "models", out, "--check") == 1
    err = capsys.readouterr().err
    assert f"{out / 'pos.md'} is stale: run seqtag cards" in err
    assert {p.name: p.read_text() for p in out.glob("*.md")} == before, "--check writes nothing"
    assert cards(tmp_path / "models", out) == 0
    assert "0.5000" in (out / "pos.md").read_text()
    assert cards(tmp_path / "models", out, "--check") == 0


def test_new_version_new_model_and_removed_model(tmp_path, capsys):
    models, out = tmp_path / "models", tmp_path / "docs"
    copy_version(MODELS / "pos" / "4", models)
    copy_version(MODELS / "slots" / "1", models)
    assert cards(models, out) == 0
    copy_version(MODELS / "pos" / "4", models, number=5)  # a new version: it serves now
    copy_version(MODELS / "dialog-act" / "3", models)  # a new model
    shutil.rmtree(models / "slots")  # a model no longer shipped
    capsys.readouterr()
    assert cards(models, out, "--check") == 1
    err = capsys.readouterr().err
    assert f"{out / 'pos.md'} is stale: run seqtag cards" in err
    assert f"{out / 'dialog-act.md'} is missing: run seqtag cards" in err
    assert f"{out / 'slots.md'} is extra" in err
    assert f"{out / 'index.md'} is stale" in err
    assert cards(models, out) == 0
    assert not (out / "slots.md").exists()
    card = (out / "pos.md").read_text()
    assert "## Version 5 (serving)" in card and "## Version 4 (rollback)" in card
    assert cards(models, out, "--check") == 0


def test_hand_written_notes_and_speed(tmp_path):
    models, out = tmp_path / "models", tmp_path / "docs"
    copy_version(MODELS / "pos" / "4", models)
    copy_version(MODELS / "pos" / "3", models)
    (out / "notes").mkdir(parents=True)
    (out / "notes" / "pos.md").write_text("- Only for English web text.\n")
    speed = {"date": "2030-01-02", "machine": {"cores": 3, "cpu": "Some CPU"}, "command": "python -m benchmarks.model_speed",
             "versions": {"pos/4": {"kind": "tagger", "runtime": "onnx", "batch_size": 64, "rounds": 5, "sentences": 400,
                                    "tokens": 5000, "data": "dev.conllu", "tokens_per_second": 12345.6,
                                    "sentence_ms": {"p50": 0.5, "p99": 1.25, "count": 2000}}}}
    (out / "speed.json").write_text(json.dumps(speed))
    assert cards(models, out) == 0
    card = (out / "pos.md").read_text()
    serving, rollback = card.split("## Version 3 (rollback)")
    assert "- Only for English web text." in serving
    assert "12,346 tokens/s" in serving and "p50 **0.500 ms**, p99 1.250 ms" in serving
    assert "2030-01-02" in serving and "Some CPU, 3 cores" in serving and "`python -m benchmarks.model_speed`" in serving
    assert "Speed: not measured" in rollback and "12,346" not in rollback
    speed["versions"]["pos/4"]["tokens_per_second"] = 1.0
    (out / "speed.json").write_text(json.dumps(speed))
    assert cards(models, out, "--check") == 1  # the figures are an input of the cards


def test_unknown_data_is_not_recorded(tmp_path):
    version = tmp_path / "models" / "ner" / "1"
    version.mkdir(parents=True)
    metadata = {
        "name": "ner", "kind": "tagger", "task": "pos", "tag_column": "xpos", "labels": ["NN", "VB"],
        "data": {"train": {"path": "corpora/my-treebank-train.conllu", "sha256": "ab" * 32, "sentences": 10},
                 "dev": {"path": "/elsewhere/en_ewt-ud-dev.conllu", "sha256": "cd" * 32}},
        "command": "seqtag train pos --train corpora/my-treebank-train.conllu --dev dev.conllu --out 'models/my ner'",
        "export_command": "seqtag export --from-checkpoint ckpt --out models/ner",
        "metrics": {"dev": {"accuracy": 0.87654, "tokens": 100,
                            "per_tag": {"NN": {"precision": 0.9, "recall": 0.8, "f1": 0.85, "support": 60},
                                        "VB": {"precision": 0.7, "recall": 0.6, "f1": 0.65, "support": 40}}}},
        "version": 1,
    }
    (version / "metadata.json").write_text(json.dumps(metadata))
    out = tmp_path / "docs"
    assert cards(tmp_path / "models", out) == 0
    card = (out / "ner.md").read_text()
    train_row = next(line for line in card.splitlines() if line.startswith("| train |"))
    assert train_row.endswith("| not recorded | not recorded |")
    dev_row = next(line for line in card.splitlines() if line.startswith("| dev |"))
    assert "UD English EWT" in dev_row and "CC BY-SA 4.0" in dev_row  # known by its file name, wherever it lies
    assert "0.8765" in card and "XPOS accuracy" in card
    assert card.index("| `NN` |") < card.index("| `VB` |")  # most frequent first
    assert shlex.split(metadata["command"]) in sh_blocks(card)
    assert "Speed: not measured" in card and "float32" in card
    assert "not recorded" in (out / "index.md").read_text()


def test_label_names_that_look_like_markup_stay_literal():
    assert model_cards.code("fo_o_fw_\"_by_bc") == "`fo_o_fw_\"_by_bc`"
    assert model_cards.text("a|b <c> *d* _e_") == "a&#124;b &lt;c&gt; \\*d\\* \\_e\\_"
    for command in ("seqtag train pos --train 'a b.conllu' --dev x", "seqtag export --from-checkpoint a b c --out m"):
        wrapped = model_cards.wrap_command(command, width=20)
        assert "\\\n    --" in wrapped and shell_words(wrapped) == shlex.split(command)


def test_bad_models_directory_is_an_error(tmp_path, capsys):
    assert cards(tmp_path / "nowhere", tmp_path / "docs") == 2
    assert "no such models directory" in capsys.readouterr().err
