"""seqtag's training package: readers, vocabularies, models, training, export and evaluation.

One module per concern, as in Stanza's tagger: ``conllu_reader`` (data), ``vocab``, ``batching``,
``model``, ``trainer``, ``export``, ``evaluate``, ``artifacts`` (model directories and metadata) and
``cli`` (the ``seqtag`` command). The service imports ``vocab`` and ``artifacts`` so that serving
and training share one definition of preprocessing and of the model layout on disk.
"""

__version__ = "0.1.0"
