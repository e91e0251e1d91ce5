"""Configuration errors, and pydantic's errors in the words of a person editing the file.

Every problem names its key path (``incoming[1].no_reply_time``) as the file spells it: a
pydantic location is a tuple of keys and indexes, printed TOML-style. Pydantic's generic
errors are reworded here; the schema's own checks raise :func:`fail` (one message where
pydantic is validating) or :func:`fail_at` (several, at keys below it), kept as written.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import AliasChoices, BaseModel, ValidationError
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class ConfigError:
    """One problem in a configuration file; ``path`` is the key path, "" for the whole file."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigInvalid(ValueError):
    """Raised by :func:`~postroom.config.load_config`; ``errors`` holds every problem found."""

    def __init__(self, source: str, errors: list[ConfigError]) -> None:
        self.source = source
        self.errors = errors
        lines = "\n".join(f"  {e}" for e in errors)
        super().__init__(f"{source}: {len(errors)} configuration error(s):\n{lines}")


def show(value: object) -> str:
    """A value as it would be written in TOML, for error messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "a table"
    return "an array" if isinstance(value, list | tuple) else str(value)


def fail(message: str) -> PydanticCustomError:
    """``raise fail(...)`` in a validator: one error, worded for the person editing the file.
    (No context is given, so braces in the message, as in ``{name}``, stay as written.)"""
    return PydanticCustomError("config", message)


def fail_at(found: Iterable[tuple[Loc, str]], value: object) -> ValidationError:
    """``raise fail_at(...)`` in a validator: several errors, each at a location below the
    value being validated (pydantic prefixes the validator's own location)."""
    details = [InitErrorDetails(type=fail(message), loc=loc, input=value) for loc, message in found]
    return ValidationError.from_exception_data("config", details)


def key_path(loc: Loc) -> str:
    """``("incoming", 1, "no_reply_time")`` -> ``incoming[1].no_reply_time``."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else part
    return path


def errors_of(exc: ValidationError, top: type[BaseModel]) -> list[ConfigError]:
    """Every error of a validation of the document model ``top``, in the file's words.

    A default computed from another key (a box's login from its address) is not made when
    that key is wrong: its error already says what is wrong, so that one is left out."""
    return [
        ConfigError(key_path(d["loc"]), _message(d, top))
        for d in exc.errors()
        if d["type"] != "default_factory_not_called"
    ]


_TYPES = {
    "string_type": "a string",
    "int_type": "an integer",
    "bool_type": "true or false",
    "list_type": "an array",
    "tuple_type": "an array",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
}


def _message(d: ErrorDetails, top: type[BaseModel]) -> str:
    kind, loc = d["type"], d["loc"]
    if kind in _TYPES:
        table = f" ([{key_path(loc)}])" if "model" in kind else ""
        return f"expected {_TYPES[kind]}{table}, got {show(d.get('input'))}"
    model, key = _model_at(loc[:-1], top), str(loc[-1]) if loc else ""
    keys = keys_of(model) if model else {}
    if kind == "extra_forbidden" and key in getattr(model, "moved", {}):
        return model.moved[key]  # type: ignore[union-attr]
    if kind == "extra_forbidden":
        # A typo must never pass as "option left at its default": name the likely key.
        close = difflib.get_close_matches(key, sorted(keys), n=1)
        return f'unknown key (did you mean "{close[0]}"?)' if close else "unknown key"
    if kind == "missing":
        alias, annotation = keys.get(key, (None, None))
        if isinstance(alias, AliasChoices):
            return f"required (give one of {', '.join(_choices(alias))})"
        if table_model(annotation) and getattr(annotation, "__origin__", None) is tuple:
            return f"required: add at least one [[{key_path(loc)}]] table"
        return f"required: add a [{key_path(loc)}] table" if table_model(annotation) else "required"
    return d["msg"]


def _choices(alias: AliasChoices) -> list[str]:
    return [c for c in alias.choices if isinstance(c, str)]


def keys_of(model: type[BaseModel]) -> dict[str, tuple[Any, Any]]:
    """Every key a table of ``model`` accepts, as the file spells it -> (alias, annotation)."""
    found = {}
    for name, field in model.model_fields.items():
        alias = field.validation_alias
        keys = _choices(alias) if isinstance(alias, AliasChoices) else [alias if isinstance(alias, str) else name]
        found |= dict.fromkeys(keys, (alias, field.annotation))
    return found


def _model_at(loc: Loc, top: type[BaseModel]) -> type[BaseModel] | None:
    """The model of the table at ``loc`` (indexes skipped: arrays of tables)."""
    model: type[BaseModel] | None = top
    for part in loc:
        if isinstance(part, str):
            model = table_model(keys_of(model).get(part, (None, None))[1]) if model else None
    return model


def table_model(annotation: Any) -> type[BaseModel] | None:
    """The table model inside an annotation such as ``tuple[IncomingBox, ...] | None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next(filter(None, map(table_model, getattr(annotation, "__args__", ()))), None)
