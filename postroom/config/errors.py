"""Configuration errors, and pydantic's errors in the words of a person editing the file.

Every problem names its key path (``incoming[1].no_reply_time``) as the file spells it: a
pydantic location is a tuple of keys and indexes, printed here TOML-style. Pydantic's
generic errors are reworded by :data:`_MESSAGES`; the schema's own checks raise
:func:`fail` (one message where pydantic is validating) or :func:`fail_at` (several, at
keys below it) and their words are kept as they are.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import AliasChoices, BaseModel, ValidationError
from pydantic.fields import FieldInfo
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
    if isinstance(value, list | tuple):
        return "an array"
    return str(value)


def fail(message: str) -> PydanticCustomError:
    """``raise fail(...)`` in a validator: one error, worded for the person editing the file.

    (No context is given, so braces in the message, as in ``{name}``, stay as written.)"""
    return PydanticCustomError("config", message)


def fail_at(found: Iterable[tuple[Loc, str]], value: object) -> ValidationError:
    """``raise fail_at(...)`` in a validator: several errors, each at a location below the
    value being validated (pydantic prefixes the validator's own location)."""
    return ValidationError.from_exception_data(
        "config",
        [InitErrorDetails(type=fail(message), loc=loc, input=value) for loc, message in found],
    )


def key_path(loc: Loc) -> str:
    """``("incoming", 1, "no_reply_time")`` -> ``incoming[1].no_reply_time``."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else part
    return path


def errors_of(exc: ValidationError, top: type[BaseModel]) -> list[ConfigError]:
    """Every error of a validation of the document model ``top``, in the file's words."""
    return [
        ConfigError(key_path(d["loc"]), message)
        for d in exc.errors()
        if (message := _message(d, top)) is not None
    ]


# -- pydantic's own errors, reworded ---------------------------------------------------------

_TYPES = {
    "string_type": "a string",
    "int_type": "an integer",
    "bool_type": "true or false",
    "list_type": "an array",
    "tuple_type": "an array",
    "dict_type": "a table",
    "float_type": "a number",
    "callable_type": "a callable",
}


def _message(d: ErrorDetails, top: type[BaseModel]) -> str | None:
    kind, loc = d["type"], d["loc"]
    got = show(d.get("input"))
    if kind == "default_factory_not_called":
        # A default computed from another key (login from address): that key's own error
        # already says what is wrong.
        return None
    if kind in _TYPES:
        return f"expected {_TYPES[kind]}, got {got}"
    if kind in ("model_type", "model_attributes_type"):
        return f"expected a table ([{key_path(loc)}]), got {got}"
    rewrite = _MESSAGES.get(kind)
    return rewrite(loc, top) if rewrite else d["msg"]


def _unknown(loc: Loc, top: type[BaseModel]) -> str:
    """A typo must never pass as "option left at its default": name the likely key."""
    model = _model_at(loc[:-1], top)
    known = sorted(accepted_keys(model)) if model else []
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    return f'unknown key (did you mean "{close[0]}"?)' if close else "unknown key"


def _missing(loc: Loc, top: type[BaseModel]) -> str:
    model = _model_at(loc[:-1], top)
    field = _fields_by_key(model).get(str(loc[-1])) if model else None
    if field is None:
        return "required"
    if isinstance(field.validation_alias, AliasChoices):
        return f"required (give one of {', '.join(_choices(field.validation_alias))})"
    inner = _model_in(field.annotation)
    if inner is None:
        return "required"
    if _is_array(field.annotation):
        return f"required: add at least one [[{key_path(loc)}]] table"
    return f"required: add a [{key_path(loc)}] table"


def _too_short(loc: Loc, top: type[BaseModel]) -> str:
    # Only arrays of tables have a minimum length (one [[incoming]] at least).
    return f"required: add at least one [[{key_path(loc)}]] table"


_MESSAGES: dict[str, Callable[[Loc, type[BaseModel]], str]] = {
    "extra_forbidden": _unknown,
    "missing": _missing,
    "too_short": _too_short,
}


# -- which table a location is in -------------------------------------------------------------


def accepted_keys(model: type[BaseModel]) -> set[str]:
    """Every key a table of ``model`` accepts, as written in the file."""
    return {key for field_name, field in model.model_fields.items() for key in _keys(field_name, field)}


def _keys(name: str, field: FieldInfo) -> list[str]:
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return _choices(alias)
    return [alias if isinstance(alias, str) else name]


def _choices(alias: AliasChoices) -> list[str]:
    return [c for c in alias.choices if isinstance(c, str)]


def _fields_by_key(model: type[BaseModel]) -> dict[str, FieldInfo]:
    return {key: field for name, field in model.model_fields.items() for key in _keys(name, field)}


def _model_at(loc: Loc, top: type[BaseModel]) -> type[BaseModel] | None:
    """The model of the table at ``loc`` (indexes skipped: arrays of tables)."""
    model: type[BaseModel] | None = top
    for part in loc:
        if isinstance(part, int):
            continue
        field = _fields_by_key(model).get(part) if model else None
        model = _model_in(field.annotation) if field else None
    return model


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The table model inside an annotation such as ``tuple[IncomingBox, ...] | None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _is_array(annotation: Any) -> bool:
    return getattr(annotation, "__origin__", None) in (tuple, list)
