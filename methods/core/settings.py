"""Typed settings: what a setting may hold, declared once, beside the code that reads it.

A method's settings are its constructor's parameters. Each one's annotation is its type, and a
setting with a range is annotated with one of the aliases below (`Annotated[<type>, Range]`):

    def __init__(self, sparsity: Fraction | str = 0.5, blocksize: Count = 128, percdamp: Damp = 0.01):

`settings_type(cls)` is the method's settings class (a frozen dataclass of those fields, its
parents' included), and `check_settings(cls, knobs)` checks a config's values against it before
the method is built, so before any weights or data load: the first value of the wrong type or
out of its range is one line naming the field, the value and what it may be. What only the
method knows (one setting against another, the model's shape) its constructor and `check_model`
still check. The run's own settings (seed, engine, paths, …) use the same `Range` in
eval/validate.py.
"""
from __future__ import annotations

import collections.abc
import dataclasses
import functools
import inspect
import math
import re
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union


@dataclass(frozen=True)
class Range:
    kind: str                        # "int" | "float" | "bool" | "str" | "choice" | "list"
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    optional: bool = False           # null allowed
    also: tuple = ()                 # special values allowed beside the range (e.g. -1: per channel)
    choices: tuple = ()
    pattern: str | None = None
    what: str | None = None          # the pattern in words

    def describe(self) -> str:
        if self.what:
            text = self.what
        elif self.kind == "choice":
            text = "one of " + ", ".join(map(str, self.choices))
        elif self.kind in ("bool", "str", "list"):
            text = {"bool": "true or false", "str": "a non-empty string", "list": "a non-empty list"}[self.kind]
            if self.pattern:
                text += f" matching {self.pattern}"
        else:
            noun = "an integer" if self.kind == "int" else "a number"
            parts = []
            if self.lo is not None:
                parts.append(f"{'>' if self.lo_open else '>='} {_num(self.lo)}")
            if self.hi is not None:
                parts.append(f"{'<' if self.hi_open else '<='} {_num(self.hi)}")
            text = noun + (" " + " and ".join(parts) if parts else "")
        if self.also:
            text += " (or " + ", ".join(map(str, self.also)) + ")"
        if self.optional:
            text += ", or null"
        return text

    def ok(self, v: Any) -> bool:
        if v is None:
            return self.optional
        if v in self.also and not isinstance(v, bool):
            return True
        if self.kind == "bool":
            return isinstance(v, bool)
        if self.kind == "str":
            return isinstance(v, str) and bool(v) and (self.pattern is None or bool(re.fullmatch(self.pattern, v)))
        if self.kind == "choice":
            return v in self.choices
        if self.kind == "list":
            return isinstance(v, (list, tuple)) and len(v) > 0
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return False
        if self.kind == "int" and not (isinstance(v, int) or float(v).is_integer()):
            return False
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        if self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi):
            return False
        return True


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def Int(lo: float | None = None, hi: float | None = None, **kw: Any) -> Range:
    return Range("int", lo, hi, **kw)


def Num(lo: float | None = None, hi: float | None = None, **kw: Any) -> Range:
    return Range("float", lo, hi, **kw)


# the ranged types a method's settings are annotated with
Fraction = Annotated[float, Num(0, 1, hi_open=True)]        # a rate, sparsity or share: [0, 1)
UnitInterval = Annotated[float, Num(0, 1)]                  # a point in training, a weight: [0, 1]
Damp = Annotated[float, Num(0, 1)]                          # a Hessian dampening, relative to its mean diagonal
Bits = Annotated[int, Int(1, 16)]                           # a bit width
BitBudget = Annotated[float, Num(0, 16, lo_open=True)]      # average bits per weight
GroupSize = Annotated[int, Int(1, also=(-1,))]              # -1: one group per row (per channel)
Count = Annotated[int, Int(1)]                              # sizes, samples, iterations, batches
Steps = Annotated[int, Int(0)]                              # optimiser steps (0: none)
Positive = Annotated[float, Num(0, lo_open=True)]           # temperatures, scales
LearningRate = Annotated[float, Num(0, lo_open=True)]
Speedup = Annotated[float, Num(1)]
Seed = Annotated[int, Int(0, 2**32 - 1)]


class SettingError(ValueError):
    """A method setting of the wrong type or out of its range (one line)."""


def _hints(init: Any) -> dict[str, Any]:
    return typing.get_type_hints(inspect.unwrap(init), include_extras=True)


@functools.lru_cache(maxsize=None)
def _fields(cls: type) -> tuple[tuple[str, Any, Any], ...]:
    """(name, type, default) of every parameter `cls(...)` accepts: its constructor's, and its
    parents' where a constructor passes `**kw` on (a subclass's parameter, and default, first)."""
    out: dict[str, tuple[str, Any, Any]] = {}
    for k in cls.__mro__:
        init = k.__dict__.get("__init__")
        if k is object or init is None:
            continue
        hints = _hints(init)
        params = inspect.signature(inspect.unwrap(init)).parameters
        for name, p in params.items():
            if name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or name in out:
                continue
            out[name] = (name, hints.get(name, Any), p.default)
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            break                       # the parents' parameters are not the caller's to give
    return tuple(out.values())


@functools.lru_cache(maxsize=None)
def settings_type(cls: type) -> type:
    """The method's settings class: a frozen dataclass with a typed field per constructor
    parameter (its parents' included), the constructor's defaults its defaults."""
    fields = []
    for name, tp, default in sorted(_fields(cls), key=lambda f: f[2] is not inspect.Parameter.empty):
        if default is inspect.Parameter.empty:
            fields.append((name, tp))
        else:
            fields.append((name, tp, dataclasses.field(default=_frozen(default))))
    return dataclasses.make_dataclass(f"{cls.__name__}Settings", fields, frozen=True,
                                      namespace={"__doc__": f"The settings of {cls.__qualname__}."})


def _frozen(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def setting_types(cls: type) -> dict[str, Any]:
    """Each setting's declared type."""
    return {name: tp for name, tp, _ in _fields(cls)}


def check_settings(cls: type, knobs: dict[str, Any], where: str = "method") -> None:
    """Every value of `knobs` that `cls` declares, checked against its type and range
    (`SettingError` at the first that does not fit); undeclared names are the constructor's to
    reject."""
    types_ = setting_types(cls)
    for name, value in knobs.items():
        if name in types_:
            problem = _problem(value, types_[name])
            if problem is not None:
                raise SettingError(f"{where}.{name}={value!r} is out of range: it must be {problem}")


def describe(tp: Any) -> str:
    """What a value of the declared type `tp` may be, in words."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is inspect.Parameter.empty:
        return "anything"
    if origin is Annotated:
        rng = next((m for m in args[1:] if isinstance(m, Range)), None)
        return rng.describe() if rng is not None else describe(args[0])
    if origin in (Union, types.UnionType):
        return " or ".join(dict.fromkeys(describe(a) for a in args))
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if tp in _NOUN:
        return _NOUN[tp]
    container = origin or tp
    if container in (list, tuple, collections.abc.Sequence):
        if container is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)}, " + ", ".join(describe(a) for a in args)
        return f"a list, each {describe(args[0])}" if args else "a list"
    if container in (dict, collections.abc.Mapping):
        return f"a mapping, each value {describe(args[1])}" if len(args) == 2 else "a mapping"
    return getattr(tp, "__name__", str(tp))


_NOUN = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}


def _problem(value: Any, tp: Any) -> str | None:
    """None where `value` fits `tp`, else what `tp` allows, in words (`describe`): of a union,
    the member of the value's own type that it missed the range of."""
    if _fits(value, tp):
        return None
    if typing.get_origin(tp) in (Union, types.UnionType):
        for a in typing.get_args(tp):
            if typing.get_origin(a) is Annotated and _fits(value, typing.get_args(a)[0]):
                return describe(a)
    return describe(tp)


def _fits(value: Any, tp: Any) -> bool:
    """Whether `value` is of the declared type `tp`, within its range."""
    if tp is Any or tp is inspect.Parameter.empty:
        return True
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        rng = next((m for m in args[1:] if isinstance(m, Range)), None)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        return _fits(value, args[0]) and (rng is None or not number or rng.ok(value))
    if origin in (Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if origin is Literal:
        return value in args
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if tp is int:
        return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, float) and value.is_integer())
    if tp in (bool, str, type(None)):
        return isinstance(value, tp)
    container = origin or tp
    if container in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            return False
        if container is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args))
        return not args or all(_fits(v, args[0]) for v in value)
    if container in (dict, collections.abc.Mapping):
        return isinstance(value, dict) and (len(args) != 2 or all(_fits(v, args[1]) for v in value.values()))
    return True   # any other class: the constructor's to check
