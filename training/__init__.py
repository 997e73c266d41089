"""seqtag's training package: two task wings over a shared core, as Stanza lays out its models.

    common/   knows no task: configuration base, vocabularies and word normalisation, checkpoints, model
              directories (artifacts), batching helpers, devices and precision, shared Keras layers, epoch
              callbacks, packed LSTMs for serving graphs, the raw-text tokenizer, reports, errors
    tagger/   token-level tagging (POS now; any CoNLL-U column): data, vocab, batching, model, trainer, export,
              serving graph, reexport, saved_tagger (the exported-model reader), evaluate, cli
    dialog/   turn-level dialog models (dialog acts, next system actions): data, vocab, batching, model,
              trainer, export, saved_dialog (the exported-model reader), evaluate, cli
    cli       the ``seqtag`` command: dispatches to each wing's commands

The core imports neither wing and neither wing imports the other. The service imports only the exported-model
readers (``training.tagger.saved_tagger``, ``training.dialog.saved_dialog``), the tokenizer and
``training.common.artifacts``: serving never loads a trainer, a model builder or a scorer.
"""

__version__ = "0.1.0"
