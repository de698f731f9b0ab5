"""The model as plain JSON-able data, and back: one encoding, driven by the dataclasses' fields and type hints.

The metadata store keeps jobs, pipelines, staged files and provenance in this form and the CLI prints it (--raw),
so a field added to the model needs no change in either. A dataclass is an object keyed by field name (a key
missing from the data takes the field's default, so data written before the field existed still decodes; a key
the model no longer has is ignored), a tuple is a list, an enum its value, bytes hex.
"""

import dataclasses
import enum
import functools
import json
import operator
import typing
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def encode(obj: Any) -> Any:
    """OBJ (a model object, or a list or tuple of them) as dicts, lists, strings and numbers."""
    if isinstance(obj, (tuple, list)):
        return [encode(x) for x in obj]
    encoder = _encoder(type(obj))
    return obj if encoder is None else encoder(obj)


def decode(kind: type[T] | Any, data: Any) -> T:
    """The object of type KIND (a model class, or a hint such as tuple[FileWrite, ...]) that DATA encodes."""
    decoder = _decoder(kind)
    return data if decoder is None else decoder(data)


def dumps(obj: Any) -> str:
    return json.dumps(encode(obj), separators=(",", ":"))


def loads(kind: type[T] | Any, text: str) -> T:
    return decode(kind, json.loads(text))


@functools.cache
def fields(cls: type) -> tuple[tuple[str, Any], ...]:
    """The (name, type hint) of each init field of dataclass CLS, in order."""
    hints = typing.get_type_hints(cls)
    return tuple((f.name, hints[f.name]) for f in dataclasses.fields(cls) if f.init)


# An encoder or decoder is made once per type, so that a long list costs no type inspection; None stands for a
# value that is its own encoding (str, int, float, bool), which is most fields, and calls nothing.

@functools.cache
def _encoder(kind: Any) -> Callable[[Any], Any] | None:
    if dataclasses.is_dataclass(kind):
        steps = tuple((name, _encoder(hint)) for name, hint in fields(kind))
        return lambda obj: {name: getattr(obj, name) if f is None else f(getattr(obj, name)) for name, f in steps}
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        item = _encoder(args[0])
        return list if item is None else lambda value: [item(x) for x in value]
    if origin is tuple:
        items = tuple(_encoder(a) for a in args)
        if all(f is None for f in items):
            return list
        return lambda value: [x if f is None else f(x) for f, x in zip(items, value, strict=True)]
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return operator.attrgetter("value")
    if kind is bytes:
        return bytes.hex
    if kind in (str, int, float, bool):
        return None
    raise TypeError(f"the codec has no encoding for {kind!r}")


@functools.cache
def _decoder(kind: Any) -> Callable[[Any], Any] | None:
    if dataclasses.is_dataclass(kind):
        steps = tuple((name, _decoder(hint)) for name, hint in fields(kind))

        def decode_one(data: dict) -> Any:
            return kind(**{name: data[name] if f is None else f(data[name]) for name, f in steps if name in data})

        return decode_one
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        item = _decoder(args[0])
        if item is None:
            return tuple
        return lambda data: tuple(item(x) for x in data)
    if origin is tuple:
        items = tuple(_decoder(a) for a in args)
        if all(f is None for f in items):
            return tuple
        return lambda data: tuple(x if f is None else f(x) for f, x in zip(items, data, strict=True))
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return kind
    if kind is bytes:
        return bytes.fromhex
    if kind is float:
        return float
    if kind in (str, int, bool):
        return None
    raise TypeError(f"the codec has no encoding for {kind!r}")
