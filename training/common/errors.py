"""Errors raised on bad user input (data files, options), carrying where the problem is."""

from __future__ import annotations


class DataFormatError(ValueError):
    """A data file could not be read; the message names the file and the line (1-based)."""

    def __init__(self, path: str, line: int | None, message: str):
        self.path = str(path)
        self.line = line
        self.reason = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class ConfigError(ValueError):
    """An unknown option or an invalid value in a training configuration."""
