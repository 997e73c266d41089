"""Turn-level dialog models: a dialog act, or a set of next system actions, for each turn as it arrives."""
