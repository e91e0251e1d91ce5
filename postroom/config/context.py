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
    # Top-level key -> its tables in file order, None for a broken one (see base.Table).
    tables: dict[str, list[Any]] = field(default_factory=dict)


def context_of(context: object) -> Context:
    """The context of a validation; the defaults when Python code builds a table itself."""
    return context if isinstance(context, Context) else Context()
