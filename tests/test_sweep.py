"""``seqtag tune``'s parts that need no Ray cluster: the search space's checks (errors name the file and the
option), seeded draws, the choice of the best trial and the table. The sweep itself runs on a real cluster in
``tests/test_ray.py``."""

from __future__ import annotations

import csv
import json

import pytest

from training.cli import main
from training.common.errors import ConfigError
from training.common.sweep import TrialRecord, best_trial, draw_trials, read_search_space, write_table

OPTIONS = ["learning_rate", "hidden", "dropout", "layers", "epochs"]


def write(tmp_path, space) -> object:
    path = tmp_path / "space.json"
    path.write_text(space if isinstance(space, str) else json.dumps(space), encoding="utf-8")
    return path


@pytest.mark.parametrize("space, message", [
    ("{not json", "cannot read the search space"),
    ([1, 2], "a search space is a JSON object"),
    ({}, "a search space is a JSON object"),
    ({"hiden": {"choice": [1]}}, "'hiden': not an option of this model"),
    ({"epochs": {"choice": [1, 2]}}, "'epochs': the sweep sets this option itself"),
    ({"hidden": [64, 128]}, "'hidden': give one of choice, uniform, loguniform, randint"),
    ({"hidden": {"normal": [0, 1]}}, "'hidden': give one of"),
    ({"hidden": {"choice": []}}, "'hidden': choice takes a non-empty list"),
    ({"dropout": {"uniform": [0.5, 0.1]}}, "'dropout': uniform takes [low, high], low <= high"),
    ({"dropout": {"uniform": [0.1, "0.5"]}}, "'dropout': uniform takes [low, high]"),
    ({"layers": {"randint": [1, 2.5]}}, "'layers': randint takes [low, high], low <= high, integers"),
    ({"learning_rate": {"loguniform": [0, 0.1]}}, "'learning_rate': loguniform takes a positive low bound"),
])
def test_a_wrong_search_space_is_refused_with_the_file_and_the_option(tmp_path, space, message):
    path = write(tmp_path, space)
    with pytest.raises(ConfigError) as error:
        read_search_space(path, OPTIONS, fixed=("epochs",))
    assert str(error.value).startswith(str(path)) and message in str(error.value)


def test_draws_are_seeded_and_stay_in_their_domains(tmp_path):
    space = read_search_space(write(tmp_path, {
        "learning_rate": {"loguniform": [0.001, 0.1]}, "hidden": {"choice": [64, 128]},
        "dropout": {"uniform": [0.1, 0.5]}, "layers": {"randint": [1, 3]}}), OPTIONS)
    drawn = draw_trials(space, 200, seed=7)
    assert drawn == draw_trials(space, 200, seed=7) and drawn != draw_trials(space, 200, seed=8)
    assert all(0.001 <= d["learning_rate"] <= 0.1 and 0.1 <= d["dropout"] <= 0.5 for d in drawn)
    assert {d["hidden"] for d in drawn} == {64, 128} and {d["layers"] for d in drawn} == {1, 2, 3}
    assert all(isinstance(d["layers"], int) for d in drawn)
    # log-uniform: about as many draws below 0.01 (the bounds' geometric mean) as above
    assert 70 < sum(d["learning_rate"] < 0.01 for d in drawn) < 130


def test_the_best_trial_is_the_best_epoch_of_any_trial_that_kept_one(tmp_path):
    records = [TrialRecord(0, {"hidden": 64}, "completed", 3, 0.80, 3, "/ck/0"),
               TrialRecord(1, {"hidden": 128}, "stopped by ASHA", 1, 0.85, 1, "/ck/1"),
               TrialRecord(2, {"hidden": 256}, "failed", 0, None, None, None, "ValueError: boom"),
               TrialRecord(3, {"hidden": 64}, "completed", 3, 0.85, 2, "/ck/3")]
    assert best_trial(records).number == 1  # a tie goes to the first drawn
    with pytest.raises(ConfigError, match="no trial finished an epoch .*trial 2: ValueError: boom"):
        best_trial([records[2]])
    table = write_table(records, tmp_path / "trials.csv")
    with open(tmp_path / "trials.csv", newline="") as written:
        rows = list(csv.DictReader(written))
    assert [r["status"] for r in rows] == ["completed", "stopped by ASHA", "failed", "completed"]
    assert rows[2]["best_dev_score"] == "" and rows[1]["best_dev_score"] == "0.85"
    assert table.splitlines()[0] == "| trial | option hidden | status | epochs | best_epoch | best_dev_score |"
    assert len(table.splitlines()) == 6


def test_seqtag_tune_refuses_a_bad_space_before_starting_anything(tmp_path, capsys):
    """Exit status 2 and the file's name, before Ray is joined (``--ray`` names no cluster here)."""
    path = write(tmp_path, {"hidden": {"choice": [16, "big"]}})
    data = tmp_path / "train.conllu"
    data.write_text("1\tDogs\tdog\tNOUN\tNNS\t_\t0\troot\t_\t_\n\n", encoding="utf-8")
    args = ["tune", "pos", "--train", str(data), "--dev", str(data), "--out", str(tmp_path / "pos"), "--search",
            str(path), "--trials", "4", "--ray", "127.0.0.1:1", "--seed", "0"]
    assert main(args) == 2
    error = capsys.readouterr().err
    assert str(path) in error and "draws {'hidden': 'big'}" in error
    assert main([*args[:-4], "--ray", "127.0.0.1:1", "--trials", "0"]) == 2
    assert "--trials takes a positive number" in capsys.readouterr().err
    assert not (tmp_path / "pos").exists()
