"""The shared core of training and serving: it knows no task and imports neither wing."""
