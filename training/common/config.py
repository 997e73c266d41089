"""The base of every model's typed configuration (``TaggerConfig``, ``DialogConfig``): a dataclass that a JSON
object or the command line fills, saved with every checkpoint and exported model.

``from_dict`` rejects unknown keys, so a typo in a config file or a CLI option fails loudly instead of being
ignored.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any, Iterable

from training.common.errors import ConfigError


def parse_bool(text: str) -> bool:
    """A boolean option's value on the command line."""
    lowered = text.lower()
    if lowered in ("true", "yes", "1", "on"):
        return True
    if lowered in ("false", "no", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def add_config_options(group, fields: Iterable[dataclasses.Field]) -> None:
    """One ``--option`` per config field, typed from its default (booleans take true/false); unset ones stay None,
    so that only the options given override a config file or a checkpoint's config."""
    for field in fields:
        kind = type(field.default)
        parse = parse_bool if kind is bool else kind
        group.add_argument("--" + field.name.replace("_", "-"), dest="config_" + field.name, type=parse,
                           default=None, metavar=kind.__name__.upper(), help=f"default {field.default!r}")


class ConfigBase:
    """Field names, ``from_dict`` that refuses unknown keys (a typo fails loudly), ``to_dict``, JSON files.

    Subclasses are dataclasses that validate themselves in ``__post_init__``.
    """

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ConfigError(f"unknown config option(s): {', '.join(unknown)}; known: {', '.join(cls.field_names())}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json_file(cls, path: str | Path):
        try:
            values = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise ConfigError(f"{path}: cannot read config: {error}") from error
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: a config file holds one JSON object")
        return cls.from_dict(values)

    def replace(self, **changes: Any):
        return self.from_dict({**self.to_dict(), **changes})
