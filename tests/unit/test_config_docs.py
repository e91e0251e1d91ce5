"""docs/configuration.md is the reference: every key the schema accepts has its row there,
and every row of a table's section is a key of that table (checked from the models)."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import AliasChoices

from postroom.config import Config
from postroom.config.errors import keys_of, table_model
from postroom.config.schema import DeadBox

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def sections() -> dict[str, set[str]]:
    """Table name ("" for the top level) -> the keys of its section's rows."""
    found: dict[str, set[str]] = {}
    for part in DOCS.read_text().split("\n## ")[1:]:
        header, _, body = part.partition("\n")
        rows = set(re.findall(r"^\| `([a-z0-9_]+)`", body, re.M))
        names = re.findall(r"`\[\[?([a-z0-9_]+)\]\]?`", header) or ([""] if header == "Top level" else [])
        for name in names:
            found[name] = rows
    return found


def keys(model: type) -> set[str]:
    """The keys of a table, a secret by its first key (the docs give ``password`` / ``_env``
    / ``_file`` in one row)."""
    found = {
        alias.choices[0] if isinstance(alias, AliasChoices) else key  # type: ignore[misc]
        for key, (alias, _) in keys_of(model).items()
    }
    # The dead box and the journal refuse an archive folder (they keep what they get).
    return found - {"archive_folder"} if issubclass(model, DeadBox) else found


def test_every_key_is_documented_in_its_tables_section() -> None:
    documented = sections()
    tables = {"": Config} | {
        name: model for name, (_, annotation) in keys_of(Config).items() if (model := table_model(annotation))
    }
    missing = {
        name: sorted(keys(model) - documented.get(name, set()) - (set(tables) | {"rules"} if model is Config else set()))
        for name, model in tables.items()
    }
    assert {name: found for name, found in missing.items() if found} == {}
    # A row for a key the table does not accept (the dead box shares its section with the
    # outbound box, which has an archive folder).
    stale = {name: sorted(documented[name] - keys(model)) for name, model in tables.items() if name in documented}
    assert {name: found for name, found in stale.items() if found and name != "dead_box"} == {}
