"""What each command installs: ``make serve`` (``pip install -e .``) only what serving needs, ``make
install-train`` adds the ``train`` extra, ``make test`` the ``train``, ``test``, ``backends`` and ``encoder`` extras; each
install has its own stamp, so one never redoes the other's work. And the service, with ``seqtag serve``, runs
without any library of the ``train`` extra, while a training command without it says which extra to add."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
import tomllib

import pytest

from test_gunicorn import REPO

TRAIN_LIBRARIES = {"scikit-learn", "conllu", "matplotlib", "tensorboard", "seqeval"}
TEST_LIBRARIES = {"pytest", "selenium", "hypothesis", "schemathesis", "torch", "pytest-xdist"}
ENCODER_LIBRARIES = {"keras-hub", "safetensors"}  # training a pretrained utterance encoder; never serving


def requirement_name(requirement: str) -> str:
    return re.split(r"[=<>!~\[; ]", requirement, maxsplit=1)[0].lower()


def test_serving_depends_on_no_training_or_test_library():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = {requirement_name(r): r for r in project["dependencies"]}
    extras = project["optional-dependencies"]
    training_only = TRAIN_LIBRARIES | TEST_LIBRARIES | ENCODER_LIBRARIES
    assert not (set(core) & training_only), sorted(set(core) & training_only)
    assert {requirement_name(r) for r in extras["train"]} == TRAIN_LIBRARIES
    assert {requirement_name(r) for r in extras["encoder"]} == ENCODER_LIBRARIES
    assert {"tensorflow", "keras", "flask", "gunicorn", "flask-swagger-ui"} <= set(core)
    # Keras stays pinned among the core dependencies: TensorFlow alone would pull a newer, broken one.
    assert core["keras"] == "keras==3.13.2"
    for requirement in [*project["dependencies"], *(r for extra in extras.values() for r in extra)]:
        assert "==" in requirement, f"not pinned: {requirement}"


BLOCK_TRAIN_EXTRA = textwrap.dedent("""
    import importlib.abc, sys

    BLOCKED = {"sklearn", "conllu", "matplotlib", "tensorboard", "seqeval", "torch", "keras_hub", "safetensors"}

    class NotInstalled(importlib.abc.MetaPathFinder):
        # As in a venv made by `pip install seqtag` (make serve): the train and encoder extras and torch are absent.
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    sys.meta_path.insert(0, NotInstalled())
""")


def test_the_service_runs_without_the_train_extra(tmp_path, random_tagger_dir, random_dialog_dirs,
                                                  random_span_tagger_dir):
    models = tmp_path / "models"
    shutil.copytree(random_tagger_dir, models / "pos" / "1")
    shutil.copytree(random_dialog_dirs["dialog-act"], models / "dialog-act" / "1")
    shutil.copytree(random_span_tagger_dir, models / "slots" / "1")  # span decoding loads with the service too
    script = BLOCK_TRAIN_EXTRA + textwrap.dedent(f"""
        from service import create_app

        client = create_app({{"models_dir": {str(models)!r}, "poll_interval_seconds": 0}}).test_client()
        tagged = client.post("/v1/models/pos:tag", json={{"texts": ["The dog barks."]}})
        assert tagged.status_code == 200 and len(tagged.json["results"][0]["tags"]) == 4, tagged.json
        session = client.post("/v1/dialogs", json={{"model": "dialog-act"}}).json["session_id"]
        turn = client.post(f"/v1/dialogs/{{session}}/turns", json={{"text": "Hi there.", "speaker": "A"}})
        assert turn.status_code == 200, turn.json
        spans = client.post("/v1/models/slots:tag", json={{"texts": ["Play Hey Jude."], "service": "Music_1"}})
        assert spans.status_code == 200 and "spans" in spans.json["results"][0], spans.json
        session = client.post("/v1/dialogs", json={{"model": "dialog-act", "slots": "slots"}}).json["session_id"]
        turn = client.post(f"/v1/dialogs/{{session}}/turns", json={{"text": "Play Hey Jude.", "speaker": "A"}})
        assert turn.status_code == 200 and "slots" in turn.json, turn.json
        assert client.get("/docs/scalar/").status_code == 200
        assert not BLOCKED & {{name.split(".")[0] for name in sys.modules}}

        from training.cli import main

        status = main(["train", "pos", "--train", "t.conllu", "--dev", "d.conllu", "--out", "m"])
        assert status == 2, status
        print("served without the train extra")
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "served without the train extra" in result.stdout
    # The training command named what is missing and how to add it.
    assert "'train' extra" in result.stderr and "pip install 'seqtag[train]'" in result.stderr


@pytest.fixture
def make_dir(tmp_path):
    """A copy of the Makefile and pyproject.toml with a stand-in .venv: ``make -n`` shows what it would run."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def plan(folder, target: str) -> list[str]:
    """The pip and venv commands ``make <target>`` would run."""
    output = subprocess.run(["make", "-n", target], cwd=folder, capture_output=True, text=True, check=True).stdout
    return [line for line in output.splitlines() if "pip install" in line or "-m venv" in line]


def installed(folder, *stamps: str) -> None:
    """A .venv as an install leaves it: a python and these stamps, newer than pyproject.toml."""
    (folder / ".venv" / "bin").mkdir(parents=True, exist_ok=True)
    (folder / ".venv" / "bin" / "python").touch()
    later = time.time() + 5
    for stamp in stamps:
        (folder / ".venv" / f".installed-{stamp}").touch()
        os.utime(folder / ".venv" / f".installed-{stamp}", (later, later))


def test_each_command_installs_what_it_needs_once(make_dir):
    root = os.path.realpath(make_dir)  # pip installs the Makefile's own checkout, wherever make runs
    # A fresh clone: make serve makes the venv and installs the project alone, no extra.
    fresh = plan(make_dir, "serve")
    assert any("-m venv" in line for line in fresh)
    assert [line for line in fresh if "pip install" in line and "upgrade" not in line] == [
        f".venv/bin/python -m pip install --quiet -e '{root}'"]
    assert any(f"--no-compile -e '{root}[train,test,backends,encoder,docs,ray]'" in line for line in plan(make_dir, "test"))
    # After make serve, make test adds the extras (one pip run), without a new venv.
    installed(make_dir, "serve")
    assert plan(make_dir, "serve") == []
    assert plan(make_dir, "test") == [
        f".venv/bin/python -m pip install --quiet --no-compile -e '{root}[train,test,backends,encoder,docs,ray]'"]
    assert plan(make_dir, "install-train") == [f".venv/bin/python -m pip install --quiet -e '{root}[train]'"]
    # After make test, make serve and make install-train install nothing.
    installed(make_dir, "serve", "train", "test")
    assert plan(make_dir, "serve") == [] and plan(make_dir, "test") == [] and plan(make_dir, "install-train") == []
    # A changed pyproject.toml installs again.
    later = time.time() + 60
    os.utime(make_dir / "pyproject.toml", (later, later))
    assert plan(make_dir, "serve") == [f".venv/bin/python -m pip install --quiet -e '{root}'"]
    # make serve runs seqtag serve.
    assert ".venv/bin/seqtag serve" in subprocess.run(["make", "-n", "serve"], cwd=make_dir, capture_output=True,
                                                       text=True).stdout


def test_make_run_through_a_linked_makefile_installs_the_makefiles_checkout(make_dir, tmp_path_factory):
    """The documentation's examples run `make serve` from a folder that links the checkout's Makefile and .venv:
    pip must install the checkout, not that folder (an editable install of a folder without the code)."""
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    for name in ("Makefile", "pyproject.toml"):
        (elsewhere / name).symlink_to(make_dir / name)
    lines = [line for line in plan(elsewhere, "serve") if "pip install" in line and "upgrade" not in line]
    assert lines == [f".venv/bin/python -m pip install --quiet -e '{os.path.realpath(make_dir)}'"]
