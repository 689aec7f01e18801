"""Field types of the configuration dataclasses, checked when they are built.

Gin passes whatever a binding says: ``TrainConfig.num_steps = '40'`` arrives as a string and
``= 4.5`` as a float, and either would fail much later (or, worse, run). Every configuration
dataclass calls :func:`check_field_types` first thing in ``__post_init__``, so a wrong type is
one :class:`ConfigError` naming the binding, the value and what to write instead.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import types
import typing
from typing import Any


class ConfigError(ValueError):
    """A configuration value is missing or invalid; the message names the field."""


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is tuple or hint is tuple:
        if not args:
            return "a tuple"
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a tuple of {_plural(args[0])}"
        return f"a tuple of {len(args)} " + (_plural(args[0]) if len(set(args)) == 1
                                              else "values")
    if origin in (collections.abc.Mapping, dict) or hint in (dict, collections.abc.Mapping):
        return "a mapping" + (f" of {_plural(args[0])} to {_plural(args[1])}" if args else "")
    return {int: "an integer", float: "a number", str: "a string", bool: "True or False",
            type(None): "None"}.get(hint, getattr(hint, "__name__", str(hint)))


def _plural(hint: Any) -> str:
    return {int: "integers", float: "numbers", str: "strings", bool: "booleans"}.get(
        hint, _describe(hint))


def matches(value: Any, hint: Any) -> bool:
    """Whether ``value`` has the type ``hint`` describes (an int is also a float; a bool is
    never an int)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is tuple or hint is tuple:
        if not isinstance(value, tuple):
            return False
        if not args:
            return True
        if len(args) == 2 and args[1] is Ellipsis:
            return all(matches(v, args[0]) for v in value)
        return len(value) == len(args) and all(matches(v, a) for v, a in zip(value, args))
    if origin in (collections.abc.Mapping, dict) or hint in (dict, collections.abc.Mapping):
        if not isinstance(value, collections.abc.Mapping):
            return False
        return not args or all(matches(k, args[0]) and matches(v, args[1])
                               for k, v in value.items())
    return True  # a type this checker does not know is the dataclass's own business


def check_field_types(instance: Any) -> None:
    """Raise ConfigError for the first field of a dataclass whose value has the wrong type."""
    cls = type(instance)
    hints = _hints(cls)
    for field in dataclasses.fields(instance):
        hint = hints.get(field.name, Any)
        value = getattr(instance, field.name)
        if matches(value, hint):
            continue
        hint_text = ""
        if isinstance(value, str) and matches(_unquoted(value), hint):
            hint_text = f"; write {cls.__name__}.{field.name} = {value} without quotes"
        elif isinstance(value, list):
            hint_text = f"; write a tuple, ({', '.join(map(repr, value))}{',' * (len(value) == 1)})"
        raise ConfigError(
            f"{cls.__name__}.{field.name} must be {_describe(hint)}, got {value!r} "
            f"({type(value).__name__}){hint_text}.")


def _unquoted(text: str) -> Any:
    """What ``text`` would be as a gin literal without its quotes (or the text itself)."""
    import ast

    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        return text
