"""The model registry: highest version serves, hot swap, rollback pins, broken versions rejected."""

import shutil

import pytest

from service.registry import ModelLookupError, ModelRegistry
from service.settings import ServiceSettings
from training.common import artifacts


def add_version(root, source, version):
    """Copy a model version in the way the exporter publishes: a staging directory renamed into place."""
    staging = root / f".staging-{version}"
    shutil.copytree(source, staging)
    artifacts.write_metadata(staging, {**artifacts.read_metadata(staging), "version": version})
    staging.rename(root / str(version))
    return root / str(version)


def add_broken_version(root, version, source):
    directory = root / str(version)
    directory.mkdir()
    shutil.copy(source / artifacts.METADATA_FILE, directory)
    (directory / "saved_model.pb").write_bytes(b"half a model")
    return directory


@pytest.fixture
def models(tmp_path, random_tagger_dir):
    add_version(tmp_path / "pos", random_tagger_dir, 1)
    return tmp_path


def registry_for(models_dir, **settings):
    registry = ModelRegistry(ServiceSettings(models_dir=str(models_dir), poll_interval_seconds=0, **settings),
                             settle_seconds=0)
    registry.refresh(initial=True)
    return registry


def test_new_version_is_swapped_in_and_old_ones_retire(models, random_tagger_dir):
    registry = registry_for(models, keep_versions=2)
    first = registry.get("pos")
    assert first.version == 1 and registry.ready() == (True, [])
    add_version(models / "pos", random_tagger_dir, 2)
    registry.refresh()
    assert registry.get("pos").version == 2
    assert registry.get("pos", 1) is first  # still loaded: ?version=1 rolls back
    # A request that started on version 1 finishes on it, even after version 1 is unloaded.
    add_version(models / "pos", random_tagger_dir, 3)
    registry.refresh()
    assert [v["version"] for v in registry.status("pos")["versions"]] == [3, 2]
    with pytest.raises(ModelLookupError, match="no loaded version 1"):
        registry.get("pos", 1)
    assert len(first.tag([["The", "dog"]])[0].tags) == 2
    registry.close()


def test_by_default_a_tagger_keeps_one_version_and_a_dialog_model_two(models, random_tagger_dir, random_dialog_dirs):
    """TF Serving's default for stateless taggers (the old version's memory is freed); dialog models keep the
    previous version, on which live sessions finish their conversations."""
    add_version(models / "dialog-act", random_dialog_dirs["dialog-act"], 1)
    registry = registry_for(models)
    add_version(models / "pos", random_tagger_dir, 2)
    add_version(models / "dialog-act", random_dialog_dirs["dialog-act"], 2)
    registry.refresh()
    assert [v["version"] for v in registry.status("pos")["versions"]] == [2]
    assert [v["version"] for v in registry.status("dialog-act")["versions"]] == [2, 1]
    with pytest.raises(ModelLookupError, match="no loaded version 1"):
        registry.get("pos", 1)
    assert registry.get("dialog-act", 1).version == 1
    registry.close()
    with pytest.raises(ValueError, match="KEEP_VERSIONS"):
        ServiceSettings.load({"keep_dialog_versions": 0}, environ={})


def test_broken_version_is_rejected_and_the_old_one_serves_on(models, random_tagger_dir):
    registry = registry_for(models)
    broken = add_broken_version(models / "pos", 2, random_tagger_dir)
    registry.refresh()
    status = registry.status("pos")
    assert status["serving_version"] == 1 and status["state"] == "AVAILABLE"
    rejected = [v for v in status["versions"] if v["state"] == "REJECTED"]
    assert [v["version"] for v in rejected] == [2] and rejected[0]["error"]
    registry.refresh()  # unchanged files: not tried again
    # The copy completes: the changed files are tried again and now serve.
    shutil.rmtree(broken)
    add_version(models / "pos", random_tagger_dir, 2)
    registry.refresh()
    assert registry.get("pos").version == 2
    registry.close()


def test_version_failing_its_warmup_is_rejected(models, random_tagger_dir):
    registry = registry_for(models)
    directory = add_version(models / "pos", random_tagger_dir, 2)
    artifacts.write_metadata(directory, {**artifacts.read_metadata(directory), "labels": ["ONLY"]})
    registry.refresh()
    assert registry.get("pos").version == 1
    assert "warm-up" in registry.status("pos")["versions"][0]["error"]
    registry.close()


def test_pin_and_deleted_versions(models, random_tagger_dir):
    add_version(models / "pos", random_tagger_dir, 2)
    pinned = registry_for(models, model_versions={"pos": 1})
    assert pinned.get("pos").version == 1 and pinned.status("pos")["pinned_version"] == 1
    pinned.close()
    registry = registry_for(models)
    assert registry.get("pos").version == 2
    shutil.rmtree(models / "pos" / "2")
    registry.refresh()
    assert registry.get("pos").version == 1
    shutil.rmtree(models / "pos")
    registry.refresh()
    with pytest.raises(ModelLookupError, match="no model named 'pos'"):
        registry.get("pos")
    assert registry.ready() == (False, [])
    registry.close()
