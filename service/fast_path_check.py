"""A version's fast path checked against its SavedModel in a child process, so that a worker never imports TensorFlow.

``python -m service.fast_path_check DIRECTORY...`` reads each version as the registry does (ONNX runtime, float32,
``fast_cache=True``): TensorFlow loads the SavedModel, the fast path is built from its weights and checked against
it, and the cache entry is written (``training.common.fast_cache``: the weights and the SavedModel's answers on the
probe). The worker then builds its graphs from that entry and checks them against the stored answers, without
TensorFlow: importing it costs a worker about 690 MiB that it would keep for its life (``docs/speed.md``).

The registry runs this only in a process that has not imported TensorFlow and for versions the cache lacks. Each
version's verdict is a JSON line on stdout: a version that fails here (a broken SavedModel, a fast path that disagrees)
is rejected with this reason, without the worker importing TensorFlow, and the reason is kept beside the cache entry
it never got (``fast_cache.rejection``), so that the other workers and later starts reject it at once; a version without a fast path (no entry
written) is read in the worker through TensorFlow. A child that dies is logged, and the worker reads its versions
itself, as it always did.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from training.common import artifacts, fast_cache


def check(directory: Path) -> str:
    """Read the version with a cached fast path (written now when missing) -> the runtime it got."""
    metadata = artifacts.read_metadata(directory)
    if metadata.get("kind", "tagger") == "dialog":
        from training.dialog.saved_dialog import SavedDialogModel

        reader = SavedDialogModel(directory, metadata, runtime="onnx", fast_cache=True)
    elif metadata.get("schema_guided"):
        from training.schema_guided.saved import SavedSchemaTagger

        reader = SavedSchemaTagger(directory, metadata, runtime="onnx", fast_cache=True)
    else:
        from training.tagger.saved_tagger import SavedTagger

        reader = SavedTagger(directory, metadata, runtime="onnx", fast_cache=True)
    return reader.runtime


def cache_entry(directory: Path, metadata: dict) -> Path:
    """Where the version's checked fast path is kept (the reader's key)."""
    from training.common import fast_cache

    if metadata.get("kind", "tagger") == "dialog":
        from training.dialog.saved_dialog import PROBE_CODE
    elif metadata.get("schema_guided"):
        from training.schema_guided.saved import PROBE_CODE
    else:
        from training.tagger.saved_tagger import PROBE_CODE
    return fast_cache.entry_for(directory, PROBE_CODE)


def main(directories: list[str]) -> int:
    """Check each version and print its verdict as a JSON line, ``{"directory": ..., "error": null | "Type: why"}``;
    one that fails does not stop the others. The registry rejects a version whose verdict is an error, with that
    reason, as if it had failed in the worker."""
    logger = logging.getLogger(__name__)
    for directory in directories:
        error = None
        try:
            logger.info("%s: fast path checked in a child process (runtime: %s)", directory, check(Path(directory)))
        except Exception as failure:  # any failure to read or check the version rejects it, as in the worker
            error = f"{type(failure).__name__}: {failure}".splitlines()[0][:500]
            logger.error("%s: %s", directory, error)
            try:  # kept, so that other workers and later starts reject it without checking it again
                fast_cache.save_rejection(cache_entry(Path(directory), artifacts.read_metadata(Path(directory))),
                                          Path(directory), error)
            except (OSError, ValueError):
                pass  # no metadata, no key: every worker finds that out at once
        print(json.dumps({"directory": directory, "error": error}), flush=True)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s")
    sys.exit(main(sys.argv[1:]))
