"""Shared fixtures: slices of the real corpora in ../shared/data and a tiny model trained through the CLI."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# A service registered by a test goes to a temporary directory, never to the user's ~/.local/state (tests that
# check registrations name their own services_dir).
os.environ.setdefault("SEQTAG_SERVICES_DIR", __import__("tempfile").mkdtemp(prefix="seqtag-test-services-"))
# seqtag tag's checked fast paths (training/common/fast_cache.py): the run's own, not the user's ~/.cache
os.environ.setdefault("SEQTAG_CACHE_DIR", __import__("tempfile").mkdtemp(prefix="seqtag-test-cache-"))

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
EWT_TRAIN = DATA / "ud-english-ewt" / "en_ewt-ud-train.conllu"
EWT_DEV = DATA / "ud-english-ewt" / "en_ewt-ud-dev.conllu"


# A made-up service in SGD's format, small enough to read at a glance (the service schema tests' sample).
POTTERY_SCHEMA = {
    "service_name": "Pottery_1",
    "description": "Book time in a pottery studio",
    "slots": [
        {"name": "kiln_temperature", "description": "How hot the kiln fires", "is_categorical": True,
         "possible_values": ["low", "medium", "high"]},
        {"name": "glaze_color", "description": "The color of the glaze", "is_categorical": False,
         "possible_values": []},
    ],
    "intents": [
        {"name": "BookFiring", "description": "Reserve a kiln firing", "is_transactional": True,
         "required_slots": ["kiln_temperature"], "optional_slots": {"glaze_color": "clear"},
         "result_slots": ["kiln_temperature", "glaze_color"]},
    ],
}

# Settings small enough to train in seconds; the tiny model only has to learn something.
TINY_OPTIONS = ["--word-dim", "24", "--char-dim", "12", "--char-hidden", "16", "--hidden", "32",
                "--layers", "1", "--batch-size", "16", "--epochs", "6", "--learning-rate", "0.01",
                "--dropout", "0.1", "--quiet"]


def first_sentences(source: Path, count: int) -> str:
    """The first ``count`` sentence blocks of a CoNLL-U file, as text."""
    blocks = source.read_text(encoding="utf-8").split("\n\n")
    return "\n\n".join(blocks[:count]).strip("\n") + "\n\n"


@pytest.fixture(scope="session")
def ewt_files():
    if not (EWT_TRAIN.is_file() and EWT_DEV.is_file()):
        pytest.skip(f"UD English EWT not found under {DATA}")
    return EWT_TRAIN, EWT_DEV


@pytest.fixture(scope="session")
def ewt_slices(ewt_files, tmp_path_factory):
    """(train, dev) files: the first 300 EWT train sentences and the first 80 dev sentences (written once per
    test run, so that the models trained on them record the same paths in every pytest-xdist worker)."""
    def write(folder: Path) -> None:
        (folder / "train.conllu").write_text(first_sentences(ewt_files[0], 300), encoding="utf-8")
        (folder / "dev.conllu").write_text(first_sentences(ewt_files[1], 80), encoding="utf-8")

    folder = built_once(tmp_path_factory, "ewt", write)
    return folder / "train.conllu", folder / "dev.conllu"


def built_once(tmp_path_factory, name: str, build) -> Path:
    """``build(folder)`` run once for the whole test run, however many pytest-xdist workers ask: the first
    builds ``<run's temp>/<name>`` under a file lock, the others wait and read what it built. For what tests
    only read (trained or exported models): each worker building its own cost minutes of training."""
    import fcntl

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # shared by the workers (each has its own basetemp below it)
    folder, done = root / name, root / f"{name}.done"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not done.exists():
            if folder.exists():  # a build that failed half-way: start over
                import shutil

                shutil.rmtree(folder)
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def torch_checkpoint(ewt_slices, tmp_path_factory):
    """A tiny tagger trained by ``seqtag train pos`` under KERAS_BACKEND=torch, without dropout (so that
    data-parallel workers, under torchrun or Ray, can be held to it exactly): (its folder, holding ``checkpoint``,
    the run's log). Trained once per test run."""
    from training_runs import run_seqtag, train_args

    def build(folder: Path) -> None:
        result = run_seqtag(train_args(ewt_slices, folder / "models" / "pos", folder / "checkpoint", "--dropout", "0"),
                            backend="torch")
        assert result.returncode == 0, result.stderr[-3000:]
        (folder / "log.txt").write_text(result.stderr, encoding="utf-8")

    folder = built_once(tmp_path_factory, "torch-tagger", build)
    return folder, (folder / "log.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def tiny_model_root(ewt_slices, tmp_path_factory):
    """``<tmp>/models/pos`` holding version 1 of a tiny tagger trained by ``seqtag train pos``, and its
    TensorBoard logs in ``<tmp>/models/tensorboard``. Trained once per test run (tests only read it)."""
    from training.cli import main

    def train(folder: Path) -> None:
        root = folder / "pos"
        train, dev = ewt_slices
        # With TensorBoard logs beside it (tests/test_reports.py reads them): one training run serves both.
        status = main(["train", "pos", "--train", str(train), "--dev", str(dev), "--out", str(root),
                       "--checkpoint", str(folder / "checkpoint"), "--tensorboard", str(folder / "tensorboard"),
                       *TINY_OPTIONS])
        assert status == 0

    return built_once(tmp_path_factory, "tiny-models", train) / "pos"


TINY_SENTENCES = [(("The", "dog", "barks", "."), ("DET", "NOUN", "VERB", "PUNCT")),
                  (("A", "cat", "sleeps", "at", "12:30", "!"), ("DET", "NOUN", "VERB", "ADP", "NUM", "PUNCT"))]


def export_random_tagger(model_root: Path, sentences=TINY_SENTENCES, **config_changes):
    """Export an untrained tiny tagger as the next version under ``model_root``: fast, tags are valid labels.

    Returns (keras model, vocabs, config, version, directory).
    """
    from training.tagger.config import TaggerConfig
    from training.tagger.data import TaggedSentence
    from training.tagger.export import export_tagger
    from training.tagger.model import build_tagger
    from training.tagger.vocab import TaggerVocabs

    config = TaggerConfig(**{"word_dim": 8, "char_dim": 4, "char_hidden": 4, "hidden": 8, "layers": 1,
                             "max_word_length": 6, **config_changes})
    vocabs = TaggerVocabs.build([TaggedSentence(w, t) for w, t in sentences], min_word_count=1)
    model = build_tagger(config, len(vocabs.words), len(vocabs.chars), len(vocabs.tags))
    version, directory = export_tagger(model, vocabs, config, model_root, {"task": "pos"})
    return model, vocabs, config, version, directory


@pytest.fixture(scope="session")
def shipped_pos_fast_path(tmp_path_factory) -> Path:
    """The shipped POS model's checked fast path in the run's ``SEQTAG_CACHE_DIR`` (shared by the workers), written
    once: ``seqtag tag``'s first load of a model checks it under TensorFlow (7 s); every later load (the README's
    example, the Ray test's actors and local run, the scorer test) reads it without TensorFlow."""
    from training.common.artifacts import resolve_model_dir

    model = resolve_model_dir(Path(__file__).resolve().parents[1] / "models" / "pos")

    def check(folder: Path) -> None:
        from training.tagger.saved_tagger import SavedTagger

        SavedTagger(model, runtime="onnx", fast_cache=True)

    built_once(tmp_path_factory, "pos-fast-path", check)
    return model


@pytest.fixture(scope="session")
def random_tagger_dir(tmp_path_factory):
    """A version directory holding a tiny untrained tagger, to copy into test model trees (exported once)."""
    return built_once(tmp_path_factory, "random-tagger", lambda folder: export_random_tagger(folder / "pos")) / "pos" / "1"


TINY_SPAN_SENTENCES = [
    (("A", "table", "in", "San", "Jose", "at", "7", "pm", "."), ("O", "O", "O", "B-city", "I-city", "O", "B-time", "I-time", "O"),
     "Restaurants_1"),
    (("Play", "Hey", "Jude", "."), ("O", "B-song_name", "I-song_name", "O"), "Music_1"),
]


def export_random_span_tagger(model_root: Path, condition: str = "first-token"):
    """Export an untrained tiny span tagger (slots; conditioned on the service) as the next version: its tags are
    decoded well-formed whatever its weights. Returns (keras model, vocabs, config, version, directory)."""
    from training.tagger.config import TaggerConfig
    from training.tagger.data import TaggedSentence
    from training.tagger.export import export_tagger
    from training.tagger.trainer import build_model, conditioned
    from training.tagger.vocab import TaggerVocabs

    config = TaggerConfig(task="spans", condition=condition, word_dim=8, char_dim=4, char_hidden=4, hidden=8, layers=1,
                          max_word_length=6)
    sentences = [TaggedSentence(w, t, condition=c) for w, t, c in TINY_SPAN_SENTENCES]
    vocabs = TaggerVocabs.build(conditioned(sentences, config), 1, conditions=condition == "embedding")
    model = build_model(config, vocabs)
    version, directory = export_tagger(model, vocabs, config, model_root,
                                       {"task": "spans", "conditions": sorted({c for _, _, c in TINY_SPAN_SENTENCES})})
    return model, vocabs, config, version, directory


@pytest.fixture(scope="session")
def random_span_tagger_dir(tmp_path_factory):
    """A version directory holding a tiny untrained span tagger (exported once)."""
    return built_once(tmp_path_factory, "random-slots", lambda folder: export_random_span_tagger(folder / "slots")) / "slots" / "1"


TINY_DIALOGS = [
    [("A", "Do you have any pets?", "qy"), ("B", "Yes, two cats.", "ny"), ("A", "Oh, nice.", "ba"), ("B", "Uh-huh.", "b")],
    [("A", "What do you think about the weather?", "qw"), ("B", "It has been awful.", "sv"), ("A", "Yeah.", "b")],
]
TINY_ACTION_DIALOGS = [
    [("USER", "I need a table for two in Paris.", ["REQUEST(time)"]), ("USER", "At 7 pm.", ["CONFIRM(time)", "CONFIRM(city)"]),
     ("USER", "Yes please.", ["NOTIFY_SUCCESS"]), ("USER", "Thanks, bye.", ["GOODBYE"])],
    [("USER", "Find me a movie.", ["REQUEST(genre)"]), ("USER", "A comedy.", ["OFFER(title)"]), ("USER", "Great.", ["GOODBYE"])],
]


def export_random_dialog_model(model_root: Path, task: str = "dialog-act", **config_changes):
    """Export an untrained tiny dialog model as the next version under ``model_root``: fast, real signatures.

    Returns (keras model, vocabs, config, version, directory).
    """
    from training.dialog.config import DialogConfig
    from training.dialog.data import Dialog, Turn
    from training.dialog.export import export_dialog_model
    from training.dialog.model import build_dialog_model
    from training.dialog.vocab import DialogVocabs, turn_tokens

    multi = task == "dialog-action"
    source = TINY_ACTION_DIALOGS if multi else TINY_DIALOGS
    dialogs = [Dialog(f"d{i}", tuple(Turn(s, t, tuple(sorted(l)) if multi else (l,)) for s, t, l in turns), "inline")
               for i, turns in enumerate(source)]
    config = DialogConfig(task=task, word_dim=8, utterance_hidden=6, speaker_dim=3, turn_hidden=10, min_word_count=1,
                          **config_changes)
    vocabs = DialogVocabs.build(dialogs, [[turn_tokens(t.text) for t in d.turns] for d in dialogs], 1)
    model = build_dialog_model(config, len(vocabs.words), len(vocabs.speakers), len(vocabs.labels))
    thresholds = [0.5] * len(vocabs.labels) if multi else None
    version, directory = export_dialog_model(model, vocabs, config, thresholds, model_root, {"task": task})
    return model, vocabs, config, version, directory


def first_lines(source: Path, count: int) -> str:
    with open(source, encoding="utf-8") as lines:
        return "".join(next(lines) for _ in range(count))


def _build_schema_model(folder: Path) -> None:
    """A tiny schema-guided span model: a tiny BERT, 150 turns of 30 SGD train dialogues, one epoch."""
    from tiny_bert import write_tiny_bert
    from training.schema_guided.config import SchemaSpanConfig
    from training.schema_guided.trainer import train_schema_spans

    (folder / "train.jsonl").write_text(first_lines(DATA / "sgd" / "sgd-train.jsonl", 30), encoding="utf-8")
    (folder / "dev.jsonl").write_text(first_lines(DATA / "sgd" / "sgd-dev.jsonl", 5), encoding="utf-8")
    encoder = write_tiny_bert(folder / "bert")
    config = SchemaSpanConfig(encoder=str(encoder), encoder_layers=1, max_pieces=24, max_description_pieces=24,
                              hidden=4, match=8, epochs=1, batch_size=32)
    train_schema_spans(config, folder / "train.jsonl", folder / "dev.jsonl", [DATA / "sgd" / "schema-train.json"],
                       [DATA / "sgd" / "schema-dev.json"], folder / "models" / "slots", "test", train_turns=150, dev_turns=30)


@pytest.fixture(scope="session")
def schema_model_dir(tmp_path_factory) -> Path:
    return built_once(tmp_path_factory, "schema-guided", _build_schema_model) / "models" / "slots" / "1"


@pytest.fixture(scope="session")
def random_dialog_dirs(tmp_path_factory):
    """Version directories of tiny untrained dialog-act and dialog-action models, to copy into model trees
    (exported once)."""
    tasks = ("dialog-act", "dialog-action")
    root = built_once(tmp_path_factory, "random-dialogs",
                      lambda folder: [export_random_dialog_model(folder / task, task) for task in tasks])
    return {task: root / task / "1" for task in tasks}


def redis_binary() -> str:
    import shutil

    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed (.ci/run installs it)")
        pytest.skip("redis-server is not installed: apt-get install redis-server")
    return binary


def start_redis(folder: Path, port: int | None = None, persistent: bool = False):
    """A real redis-server on loopback, answering when this returns: (process, port).

    ``persistent``: append-only file fsynced on every write, as a deployment that must keep sessions across
    a restart of Redis runs it; started again on the same ``folder`` and port, it has them back.
    """
    import socket
    import subprocess
    import time

    import redis

    if port is None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
    persistence = ["--appendonly", "yes", "--appendfsync", "always"] if persistent else ["--appendonly", "no"]
    process = subprocess.Popen([redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                *persistence, "--dir", str(folder)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:  # not listening yet, or still loading its append-only file
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
    client.close()
    return process, port


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A real Redis server on a free loopback port for the test session (``.ci/run`` installs redis-server)."""
    process, port = start_redis(tmp_path_factory.mktemp("redis"))
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(timeout=10)


# Seconds each test file took in a full run on 2 cores (pytest --durations=0, 2026-12-06): pytest-xdist hands
# whole files to its two workers in collection order, and the longest first finish together (a long file
# dealt last runs alone at the end). Only the order depends on these numbers: a file missing here runs after them.
FILE_SECONDS = {
    "test_dialog_model.py": 140, "test_vectors.py": 115, "test_faults.py": 88, "test_backends.py": 150,
    "test_web_page.py": 71, "test_gunicorn_sessions.py": 69, "test_shipped_dialog_models.py": 57,
    "test_ray.py": 95, "test_docs_examples.py": 42, "test_gunicorn.py": 40, "test_load.py": 38,
    "test_fast_path.py": 37, "test_fuzz.py": 35, "test_cli.py": 33, "test_sessions.py": 33, "test_tag.py": 30,
    "test_spans.py": 29, "test_export.py": 28, "test_docs.py": 25, "test_shape_trap.py": 23, "test_text_encoder.py": 19,
    "test_install.py": 9, "test_auth.py": 9, "test_haproxy.py": 45,
}


def pytest_collection_modifyitems(config, items):
    """Longest files first (a stable sort: tests keep their order within a file)."""
    items.sort(key=lambda item: -FILE_SECONDS.get(item.path.name, 0))
