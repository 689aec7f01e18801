"""Plain-data wire format between the trusted runner and the worker that hosts a solution.

The verdict of a check is computed by the runner from values the worker sends, so what crosses
the pipe must be data only: JSON scalars, and tagged lists for the containers ``==`` needs.
Decoding builds genuine built-in objects (a subclass with a forged ``__eq__`` arrives as its base
type); anything else travels as a handle the runner may call but never compares by value.
Copied into the sandbox next to ``runner.py`` and ``worker.py``; standard library only, Python
>= 3.8.
"""

from __future__ import annotations

import collections
import decimal
import fractions
import json

# First line of a check program (see mbpp.py); the runner switches to check mode on it.
CHECK_MARKER = "# codereason_jax sandbox check v1"
MAX_LINE = 64 << 20  # bytes of one message, so a huge reply is an error, not an OOM
MAX_ITEMS = 1 << 20  # items taken from an iterator the solution returns

# Built-in types that may be passed as values (e.g. ``isinstance`` arguments); no functions, so a
# worker cannot hand the runner ``exec`` or ``getattr`` to call.
_TYPES = {t.__name__: t for t in (bool, int, float, complex, str, bytes, bytearray, list, tuple,
                                  dict, set, frozenset, range)}
_SEQUENCES = {"t": tuple, "l": list, "s": set, "f": frozenset, "q": collections.deque}
_MAPPINGS = {"d": dict, "C": collections.Counter, "O": collections.OrderedDict}


class WireError(ValueError):
    """A message that is not well-formed plain data."""


def encode(obj, handle=None):
    """`obj` as JSON-ready plain data; `handle(obj)` names what is not plain (None: error)."""
    if obj is None or type(obj) in (bool, int, float, str):
        return obj
    if isinstance(obj, bool):
        return bool(obj)
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, type) and _TYPES.get(obj.__name__) is obj:
        return ["T", obj.__name__]
    if isinstance(obj, complex):
        return ["c", obj.real, obj.imag]
    if isinstance(obj, (bytes, bytearray)):
        return ["b", bytes(obj).hex()]
    if isinstance(obj, decimal.Decimal):
        return ["x", str(obj)]
    if isinstance(obj, fractions.Fraction):
        return ["r", obj.numerator, obj.denominator]
    for tag, kind in _MAPPINGS.items():
        if type(obj) is kind:
            return [tag, [[encode(k, handle), encode(v, handle)] for k, v in obj.items()]]
    if isinstance(obj, dict):  # defaultdict and other subclasses compare as dicts
        return ["d", [[encode(k, handle), encode(v, handle)] for k, v in obj.items()]]
    for tag, kind in _SEQUENCES.items():
        if isinstance(obj, kind):  # namedtuples arrive as tuples
            return [tag, [encode(item, handle) for item in obj]]
    if isinstance(obj, range):
        return ["g", obj.start, obj.stop, obj.step]
    if _is_iterator(obj):  # map, filter, generators: their items, as an iterator
        return ["i", [encode(item, handle) for item in _take(obj)]]
    if handle is not None:
        return ["h", handle(obj)]
    raise TypeError("cannot send a %s across the sandbox boundary" % type(obj).__name__)


def _is_iterator(obj) -> bool:
    return hasattr(type(obj), "__next__") and hasattr(type(obj), "__iter__")


def _take(iterator) -> list:
    items = []
    for item in iterator:
        if len(items) >= MAX_ITEMS:
            raise ValueError("iterator longer than %d items" % MAX_ITEMS)
        items.append(item)
    return items


def decode(data, handle=None):
    """Built-in objects from `data` (made by :func:`encode`); `handle(n)` rebuilds handles."""
    if data is None or type(data) in (bool, int, float, str):
        return data
    if type(data) is not list or not data or type(data[0]) is not str:
        raise WireError("not plain data: %r" % (data,))
    tag, args = data[0], data[1:]
    try:
        if tag in _SEQUENCES and len(args) == 1:
            return _SEQUENCES[tag](decode(item, handle) for item in _items(args[0]))
        if tag in _MAPPINGS and len(args) == 1:
            return _MAPPINGS[tag](dict((decode(k, handle), decode(v, handle))
                                       for k, v in _items(args[0])))
        if tag == "i" and len(args) == 1:
            return iter([decode(item, handle) for item in _items(args[0])])
        if tag == "c" and len(args) == 2:
            return complex(_number(args[0]), _number(args[1]))
        if tag == "b" and len(args) == 1 and type(args[0]) is str:
            return bytes.fromhex(args[0])
        if tag == "x" and len(args) == 1 and type(args[0]) is str:
            return decimal.Decimal(args[0])
        if tag == "r" and len(args) == 2 and all(type(a) is int for a in args):
            return fractions.Fraction(args[0], args[1])
        if tag == "g" and len(args) == 3 and all(type(a) is int for a in args):
            return range(*args)
        if tag == "T" and len(args) == 1 and args[0] in _TYPES:
            return _TYPES[args[0]]
        if tag == "h" and len(args) == 1 and type(args[0]) is int and handle is not None:
            return handle(args[0])
    except (TypeError, ValueError, ZeroDivisionError, decimal.InvalidOperation) as err:
        raise WireError("bad %r value: %s" % (tag, err)) from None
    raise WireError("unknown or malformed tag %r" % (tag,))


def _items(value) -> list:
    if type(value) is not list:
        raise WireError("expected a list, got %s" % type(value).__name__)
    return value


def _number(value):
    if type(value) not in (int, float):
        raise WireError("expected a number, got %s" % type(value).__name__)
    return value


def dumps(message: dict) -> bytes:
    """One message as a line (NaN and infinities allowed: they are float values)."""
    return (json.dumps(message, separators=(",", ":")) + "\n").encode()


def loads(line: bytes) -> dict:
    """A message, checked to be a JSON object."""
    if len(line) > MAX_LINE:
        raise WireError("message of %d bytes" % len(line))
    try:
        message = json.loads(line.decode("utf-8"))
    except (ValueError, RecursionError) as err:
        raise WireError("not JSON: %s" % str(err)[:200]) from None
    if type(message) is not dict:
        raise WireError("not a JSON object")
    return message
