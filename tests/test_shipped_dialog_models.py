"""The shipped ``models/dialog-act`` and ``models/dialog-action``: metadata, size, and their dev figures
reproduced by ``seqtag evaluate`` on the corpora beside the repository."""

import json

import pytest

from training.cli import main
from training.common import artifacts
from training.dialog.saved_dialog import DialogTurnInput, SavedDialogModel

from conftest import DATA, REPO

SHIPPED = {
    # name: (data, format, headline metric, floor it must reach, count key)
    "dialog-act": (DATA / "swda" / "val", "swda", "accuracy", 0.80, "utterances"),  # issue 18's target
    "dialog-action": (DATA / "sgd" / "sgd-dev.jsonl", "sgd", "micro_f1", 0.76, "turns"),  # issue 18's target
}


@pytest.fixture(scope="module", params=sorted(SHIPPED))
def shipped(request):
    directory = artifacts.resolve_model_dir(REPO / "models" / request.param)
    return request.param, directory, artifacts.read_metadata(directory)


def test_metadata_is_complete_and_small(shipped):
    name, directory, metadata = shipped
    data, fmt, metric, floor, _ = SHIPPED[name]
    assert metadata["name"] == name and metadata["kind"] == "dialog" and metadata["task"] == name
    # one trained model's training command, or an ensemble's export command and each member's training command
    members = metadata.get("ensemble", [metadata])
    assert len(members) == 1 or metadata["command"].startswith("seqtag export --from-checkpoint ")
    assert all(member["command"].startswith(f"seqtag train {name} ") for member in members)
    assert metadata["libraries"]["keras"] == "3.13.2"
    assert metadata["metrics"]["dev"][metric] >= floor
    for split in ("train", "dev"):
        assert len(metadata["data"][split]["sha256"]) == 64


def test_evaluate_reproduces_the_recorded_dev_figures(shipped, capsys):
    name, directory, metadata = shipped
    data, fmt, metric, floor, count = SHIPPED[name]
    if not data.exists():
        pytest.skip(f"{data} not found")
    assert main(["evaluate", "--model", str(directory.parent), "--data", str(data), "--format", fmt, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result[metric] >= floor
    assert result[metric] == pytest.approx(metadata["metrics"]["dev"][metric], abs=1e-6)
    assert result[count] == metadata["metrics"]["dev"][count]


def test_streams_a_conversation():
    model = SavedDialogModel(artifacts.resolve_model_dir(REPO / "models" / "dialog-act"))
    state_h, state_c = model.zero_state(1)
    acts = []
    for speaker, text in (("A", "Do you have any pets?"), ("B", "Yes, we have two cats. They are great company."),
                          ("A", "Uh-huh.")):
        tokens = [token.text for token in model.tokenizer.tokenize(text)]  # as the service reads a turn
        result = model.step([DialogTurnInput(tokens, speaker)], state_h, state_c)
        state_h, state_c = result["state_h"], result["state_c"]
        acts.append(result["labels"][0].decode())
    assert acts[0] in ("qy", "qo", "qw", "qy^d") and acts[2] in ("b", "aa", "ba", "bk")


def test_the_act_model_names_its_acts(tmp_path):
    """The serving models/dialog-act carries SwDA's act names (label_map.txt), one per label, and the service answers
    each turn's act with its name."""
    from service import create_app
    from training.dialog.data import read_label_names

    directory = artifacts.resolve_model_dir(REPO / "models" / "dialog-act")
    metadata = artifacts.read_metadata(directory)
    assert set(metadata["label_names"]) == set(metadata["labels"])
    label_map = DATA / "swda" / "label_map.txt"
    if label_map.is_file():
        assert metadata["label_names"] == read_label_names(label_map)
    assert metadata["label_names"]["qy"] == "Yes-No-Question" and metadata["label_names"]["b"] == "Acknowledge (Backchannel)"
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "dialog-act").symlink_to(REPO / "models" / "dialog-act")
    app = create_app({"models_dir": str(tmp_path / "models"), "poll_interval_seconds": 0, "request_log": False})
    try:
        client = app.test_client()
        session = client.post("/v1/dialogs", json={"model": "dialog-act"}).get_json()["session_id"]
        for text in ("Do you have any pets?", "Yes, two cats.", "Uh-huh."):
            answer = client.post(f"/v1/dialogs/{session}/turns", json={"text": text, "speaker": "A"}).get_json()
            assert answer["label_name"] == metadata["label_names"][answer["label"]], answer
    finally:
        app.extensions["seqtag.registry"].close()
