"""The base of every table of the file, and what validation needs besides the file.

Pydantic gives all or nothing: a file with one broken agent yields no agents at all. The
checks across tables (duplicate addresses, "no agent has skill", ...) must still run on
everything that is valid, so that every error of a file is reported in one pass; so each
table leaves its validated value (or what passed of it) in the :class:`Context` as it goes.
"""

from __future__ import annotations

from typing import Any

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    model_validator,
)

from postroom.config.context import Broken, Context
from postroom.config.secrets import Given


class Table(BaseModel):
    """One table of the file; frozen, because the engine shares it between threads.

    Fields are named as the code reads them (``no_reply_seconds``) and aliased to the key
    the file uses (``no_reply_time``); files are validated by key only (``by_name=False``),
    so an attribute name is not a second spelling of a key. Python code may construct
    tables by attribute name.
    """

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_by_name=True, validate_by_alias=True
    )

    @model_validator(mode="before")
    @classmethod
    def _mark_secret_sources(cls, data: Any) -> Any:
        """``password_env = "X"`` is an environment variable's name, not a password: mark
        each secret's value with the key it was given under, for secrets.resolve."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for f in cls.model_fields.values():
            if not isinstance(f.validation_alias, AliasChoices):
                continue  # only secrets have several keys (password, password_env, ...)
            keys = [k for k in f.validation_alias.choices if isinstance(k, str) and k in data]
            if len(keys) > 1:
                # "Give only one": reported at the second key given, the only one left
                # for pydantic to read.
                for key in keys[:1] + keys[2:]:
                    del data[key]
                data[keys[1]] = Given(keys[1], data[keys[1]], others=tuple(keys))
            elif keys and data[keys[0]] is not None:  # None: Python code giving no secret
                data[keys[0]] = Given(keys[0], data[keys[0]])
        return data

    @model_validator(mode="wrap")
    @classmethod
    def _keep(cls, data: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Any:
        context = info.context
        if not isinstance(context, Context) or info.field_name is None:
            return handler(data)
        kept = context.tables.setdefault(info.field_name, [])
        try:
            table = handler(data)
        except ValidationError as e:
            bad = frozenset(str(d["loc"][0]) for d in e.errors() if d["loc"])
            kept.append(Broken(data if isinstance(data, dict) else {}, bad))
            raise
        kept.append(table)
        return table
