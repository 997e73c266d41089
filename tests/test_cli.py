"""``seqtag train pos`` and ``seqtag evaluate`` end to end, in-process, on slices of UD English EWT."""

import json

from training.cli import main
from training.common import artifacts
from training.tagger.data import read_conllu
from training.tagger.evaluate import evaluate_tagger
from training.tagger.saved_tagger import SavedTagger


def test_train_writes_a_complete_version(tiny_model_root, ewt_slices):
    train, dev = ewt_slices
    assert artifacts.list_versions(tiny_model_root) == [1]
    metadata = artifacts.read_metadata(tiny_model_root / "1")
    assert metadata["data"]["train"] == {"path": str(train), "sha256": artifacts.sha256_file(train),
                                         "sentences": 300, "tokens": sum(len(s.words) for s in read_conllu(train))}
    assert metadata["data"]["dev"]["sha256"] == artifacts.sha256_file(dev)
    assert metadata["command"].startswith("seqtag train pos --train ")
    assert metadata["config"]["hidden"] == 32 and metadata["config"]["layers"] == 1
    assert metadata["training"]["epochs_run"] == len(metadata["training"]["history"]) >= 1
    assert 0 < metadata["metrics"]["dev"]["accuracy"] <= 1
    assert {"tensorflow", "keras", "numpy", "python"} <= set(metadata["libraries"])


def test_tiny_model_learns(tiny_model_root, ewt_slices):
    """Well above the majority tag after a few seconds of training."""
    _, dev = ewt_slices
    sentences = read_conllu(dev)
    tags = [t for s in sentences for t in s.tags]
    majority = max(tags.count(t) for t in set(tags)) / len(tags)
    metrics = evaluate_tagger(SavedTagger(tiny_model_root / "1"), sentences)
    assert metrics["accuracy"] > majority + 0.3, (metrics["accuracy"], majority)


def test_evaluate_json_prints_one_object(tiny_model_root, ewt_slices, capsys):
    _, dev = ewt_slices
    assert main(["evaluate", "--model", str(tiny_model_root), "--data", str(dev), "--format", "conllu", "--json"]) == 0
    output = capsys.readouterr().out
    result = json.loads(output)
    assert output.count("\n") == 1
    expected = evaluate_tagger(SavedTagger(tiny_model_root / "1"), read_conllu(dev))
    assert result["accuracy"] == expected["accuracy"]
    assert result["tokens"] == sum(len(s.words) for s in read_conllu(dev))
    assert result["oov"]["tokens"] + result["in_vocabulary"]["tokens"] == result["tokens"]
    assert set(result["per_tag"]) >= {"NOUN", "VERB", "PUNCT"}


def test_evaluate_table_and_explicit_version(tiny_model_root, ewt_slices, capsys):
    _, dev = ewt_slices
    assert main(["evaluate", "--model", str(tiny_model_root / "1"), "--data", str(dev)]) == 0
    table = capsys.readouterr().out
    assert "accuracy" in table and "NOUN" in table and "precision" in table


def test_errors_name_the_file_and_line(tiny_model_root, tmp_path, capsys):
    bad = tmp_path / "bad.conllu"
    bad.write_text("1\tThe\tthe\tDET\tDT\t_\t2\tdet\t_\t_\n2\tdog\n")
    assert main(["evaluate", "--model", str(tiny_model_root), "--data", str(bad), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"{bad}:2: expected 10 tab-separated columns" in captured.err
    assert main(["evaluate", "--model", str(tmp_path / "nothing"), "--data", str(bad)]) == 2
    assert "no model here" in capsys.readouterr().err


def test_time_budget_stops_after_the_epoch_that_crosses_it(ewt_slices):
    from training.tagger.config import TaggerConfig
    from training.tagger.trainer import train_tagger

    train, dev = (read_conllu(path) for path in ewt_slices)
    config = TaggerConfig(word_dim=8, char_dim=4, char_hidden=4, hidden=8, layers=1, epochs=5, max_minutes=1e-6)
    result = train_tagger(config, train[:60], dev[:20])
    assert len(result.history) == 1 and result.best_epoch == 1
