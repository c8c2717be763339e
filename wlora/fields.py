"""What the config fields are — their default and help, as the config classes declare them — and how a
command-line value becomes one.

Help text lives on the dataclass fields themselves (``field(metadata={"help": ...})``, as peft does),
so ``python -m wlora.train --help``, ``--list-method-fields`` and a sweep's flags read one source.

:func:`parse_field_value` turns ``KEY=VALUE`` text (``--set`` of ``wlora.train`` and of the sweeps)
into a config value by the field's declared type. Lists are accepted as JSON (``'["query","value"]'``)
or as a comma list (``query,value``); for ``target_modules``, which also takes a regex string, text
with regex characters (``^$()[]{}|*+?\\``) stays one regex and ``all-linear`` stays the keyword.
"""

from __future__ import annotations

import dataclasses
import json
import re
import textwrap
import types
import typing
from collections.abc import Sequence
from functools import cache
from typing import Any, NamedTuple

#: Words that stay one string in a field that takes either a string or a list of names.
KEYWORDS = frozenset({"all-linear"})
_REGEX_CHARS = re.compile(r"[\^$()\[\]{}|*+?\\]")
_NONE_WORDS = frozenset({"none", "null"})
_BOOL_WORDS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


class FieldInfo(NamedTuple):
    name: str
    type: Any
    default: Any
    """The default value (a default factory is called); ``dataclasses.MISSING`` when required."""
    help: str


def field_infos(cls: type) -> dict[str, FieldInfo]:
    """Name → :class:`FieldInfo` for every field of the dataclass ``cls``, in declaration order."""
    return dict(_field_infos(cls))


@cache
def _field_infos(cls: type) -> tuple[tuple[str, FieldInfo], ...]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        out.append((f.name, FieldInfo(f.name, hints.get(f.name, Any), default, str(f.metadata.get("help", "")))))
    return tuple(out)


def _members(tp: Any) -> tuple[Any, ...]:
    """The members of a union type (``X | Y``, ``Optional[X]``), or ``(tp,)``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return typing.get_args(tp)
    return (tp,)


def _is_sequence(tp: Any) -> bool:
    origin = typing.get_origin(tp) or tp
    return isinstance(origin, type) and origin is not str and issubclass(origin, (tuple, list, Sequence))


def is_list_field(tp: Any) -> bool:
    """True when the declared type ``tp`` takes a list (``tuple[str, ...]``, ``list[int] | None`` …)."""
    return any(_is_sequence(m) for m in _members(tp))


def _field_type(key: str, method: str | None) -> Any:
    from wlora.registry import METHODS, get_method
    from wlora.run_config import TrainConfig

    own = field_infos(TrainConfig)
    if key in own:
        return own[key].type
    specs = [get_method(method)] if method is not None else list(METHODS.values())
    for spec in specs:
        infos = field_infos(spec.config_cls)
        if key in infos:
            return infos[key].type
    return None


def parse_field_value(key: str, text: str, method: str | None = None) -> Any:
    """The value of config field ``key`` written as ``text`` on a command line.

    Args:
        key: a :class:`~wlora.run_config.TrainConfig` field or a method config field.
        text: the text after ``KEY=``.
        method: the method slug whose config declares ``key``; None = look in every method's config.

    Returns:
        ``None`` for ``none``/``null``; a list for a list field given as JSON or as ``a,b,c``; a bool
        for ``true``/``false``; a number or any other JSON value; else the text itself. A key no config
        declares is read as JSON, else as text (the config's validation then rejects the key by name).

    Raises:
        ValueError: a comma list with an empty entry (``q,,v``).
    """
    raw = text.strip()
    tp = _field_type(key, method)
    if raw.lower() in _NONE_WORDS:
        return None
    if raw.lower() in _BOOL_WORDS and tp is not None and bool in _members(tp):
        return _BOOL_WORDS[raw.lower()]
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    if tp is None or not is_list_field(tp) or not isinstance(value, str) or value != raw:
        return value
    takes_str = str in _members(tp)
    if takes_str and (raw in KEYWORDS or _REGEX_CHARS.search(raw)):
        return raw  # one regex (or keyword), as peft reads a string
    items = [t.strip() for t in raw.split(",")]
    if not raw or any(not t for t in items):
        raise ValueError(f"`{key}`: empty entry in the comma list {text!r}")
    item_types = [a for m in _members(tp) if _is_sequence(m) for a in typing.get_args(m) if a is not Ellipsis]
    if item_types and all(t in (int, float) for t in item_types):
        try:
            return [json.loads(t) for t in items]
        except json.JSONDecodeError:
            raise ValueError(f"`{key}`: expected a list of numbers, got {text!r}") from None
    return items


def format_fields(cls: type, skip: Sequence[str] = ()) -> str:
    """One block per field: ``name = default  (type)`` and its help, indented (``--list-method-fields``)."""
    lines = []
    for info in field_infos(cls).values():
        if info.name in skip:
            continue
        default = "(required)" if info.default is dataclasses.MISSING else repr(info.default)
        lines.append(f"{info.name} = {default}  ({_type_name(info.type)})")
        if info.help:
            lines.append(textwrap.fill(info.help, 100, initial_indent="    ", subsequent_indent="    "))
    return "\n".join(lines)


def _type_name(tp: Any) -> str:
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__name__
    return str(tp).replace("typing.", "")


def flag_converter(tp: Any):
    """argparse ``type=`` for a config field of declared type ``tp``: ``int``/``float`` parsed, ``none`` /
    ``null`` accepted when the field is optional, anything else kept as text."""
    import argparse

    members = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    optional = type(None) in members
    base = next((m for m in members if m is not type(None)), str)

    def convert(text: str) -> Any:
        if optional and text.strip().lower() in _NONE_WORDS:
            return None
        if base in (int, float):
            try:
                return base(text)
            except ValueError:
                want = "a whole number" if base is int else "a number"
                raise argparse.ArgumentTypeError(
                    f"expected {want}{' or none' if optional else ''}, got {text!r}"
                ) from None
        return text

    convert.__name__ = getattr(base, "__name__", "value")
    return convert


def _fits(tp: Any, value: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin is typing.Literal:
        return value in typing.get_args(tp)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if _is_sequence(tp):
        return isinstance(value, (list, tuple))
    check = origin or tp
    return not isinstance(check, type) or isinstance(value, check)


def _kind_name(tp: Any) -> str:
    if typing.get_origin(tp) is typing.Literal:
        return "one of " + ", ".join(str(a) for a in typing.get_args(tp))
    if _is_sequence(tp):
        return "a list"
    names = {bool: "true or false", int: "a whole number", float: "a number", str: "text", type(None): "none"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def type_problem(tp: Any, value: Any) -> str | None:
    """None when ``value`` fits the declared type ``tp``; else what the field takes, in words
    (``"a number"``, ``"a whole number or none"``), for the message that names the field and value."""
    members = _members(tp)
    if value is None:
        return None if type(None) in members or tp is Any else " or ".join(_kind_name(m) for m in members)
    if any(_fits(m, value) for m in members if m is not type(None)):
        return None
    return " or ".join(_kind_name(m) for m in members)


def check_types(cls: type, values: typing.Mapping[str, Any]) -> None:
    """Raise ``ValueError("`lr` must be a number, got 'bogus'")`` for the first value of ``values`` whose
    field of the dataclass ``cls`` declares another type; keys ``cls`` does not declare are left alone."""
    infos = field_infos(cls)
    for key, value in values.items():
        info = infos.get(key)
        want = type_problem(info.type, value) if info is not None else None
        if want is not None:
            raise ValueError(f"`{key}` must be {want}, got {value!r}")


def shown_default(value: Any) -> str:
    """A default as a user types it on the command line: ``none``, ``sst2,rte``, ``3``, ``0.1``."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ",".join(shown_default(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


#: The sentence every command line's help starts with: how to type "none".
NONE_NOTE = "A value of `none` sets an optional value to None (e.g. --max-steps none); lists are comma-separated."


class OneLineErrorParser:
    """Mixin for ``argparse.ArgumentParser``: a flag error is one line naming the flag and the value, then a
    one-line hint, instead of the whole usage (exit status 2)."""

    def error(self, message: str):  # type: ignore[override]
        message = re.sub(r"^argument (--[\w-]+)(/[\w-]+)*: ", r"\1: ", message)
        self.exit(2, f"error: {message}\n  ({self.prog} --help lists every flag)\n")  # type: ignore[attr-defined]
