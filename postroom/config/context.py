"""What validating a file needs besides the file: handed to pydantic as its context."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Context:
    # Relative *_file paths and cafile are read from here: the configuration file's folder.
    base_dir: Path = field(default_factory=Path.cwd)
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    source: Path | None = None
    # Top-level key -> its tables in file order, a Broken for a broken one (base.Table).
    tables: dict[str, list[Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Broken:
    """A table with errors of its own, as written: the checks across tables still read the
    keys that passed (its address is still a duplicate, its skills still some agent's)."""

    data: Mapping[str, Any]
    bad: frozenset[str]

    def get(self, key: str) -> Any:
        return None if key in self.bad else self.data.get(key)


def context_of(context: object) -> Context:
    """The context of a validation; the defaults when Python code builds a table itself."""
    return context if isinstance(context, Context) else Context()
