"""Token-level tagging (part of speech now, any CoNLL-U column; span tagging is a second task of this wing)."""
