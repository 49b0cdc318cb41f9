"""Checking the ``args`` of a config entry against the signature they are passed to, at every depth.

A parameter whose value is itself a dict of options declares that dict's keys with
``Annotated[dict | None, ArgsOf(Target)]``: ``Target`` (a class, dataclass or function) lists the valid keys in
its signature, so ``{"temporal": {"lambda_begin": 0.1}}`` fails as ``unknown key 'loss.args.temporal.lambda_begin';
did you mean 'lambda_end'?``; ``Annotated[int, Bounds(1)]`` bounds a number. Types come from annotations (else from the default's type); JSON ints are accepted
for floats, bools are not accepted for ints, lists stand for tuples.
"""
from __future__ import annotations

import collections.abc
import difflib
import inspect
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable


class ConfigError(ValueError):
    """A config that cannot be run; the message is one line naming the config file and the dotted key."""


@dataclass(frozen=True)
class ArgsOf:
    """``Annotated`` marker of a dict-valued parameter: its keys are the parameters of ``target``."""

    target: Callable


@dataclass(frozen=True)
class Bounds:
    """``Annotated`` marker of a numeric parameter: ``low <= value`` (and ``value <= high`` when given)."""

    low: float
    high: float | None = None

    def violation(self, value) -> str | None:
        """Why ``value`` is out of range, or None (non-numbers and None are left to the type check)."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        if value < self.low:
            return f"must be >= {self.low}"
        if self.high is not None and value > self.high:
            return f"must be <= {self.high}"
        return None


def closest(key: str, valid) -> str:
    """``"; did you mean 'x'?"`` for the valid key closest to ``key``, else the list of valid keys."""
    match = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    return f"; did you mean '{match[0]}'?" if match else f"; valid keys: {sorted(valid)}"


# ----------------------------------------------------------------------------- annotations
def _strip_annotated(tp):
    return typing.get_args(tp)[0] if typing.get_origin(tp) is typing.Annotated else tp


def args_schema(annotation) -> Callable | None:
    """The ``ArgsOf`` target of an ``Annotated`` annotation, or None."""
    if typing.get_origin(annotation) is typing.Annotated:
        for extra in annotation.__metadata__:
            if isinstance(extra, ArgsOf):
                return extra.target
    return None


def bounds_of(annotation) -> Bounds | None:
    """The ``Bounds`` of an ``Annotated`` annotation, or None."""
    if typing.get_origin(annotation) is typing.Annotated:
        return next((extra for extra in annotation.__metadata__ if isinstance(extra, Bounds)), None)
    return None


def type_name(tp) -> str:
    """An annotation in JSON terms: ``int``, ``list[int]`` (also for ``tuple[int, ...]``), ``[float, float]``
    (a fixed-length tuple), ``dict | None``, ``one of ['a', 'b']`` (a Literal)."""
    tp = _strip_annotated(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(arg) for arg in args)
    if origin is typing.Literal:
        return f"one of {list(args)}"
    if tp is type(None):
        return "None"
    if origin in (list, tuple, collections.abc.Sequence) and args:
        if origin is tuple and args[-1] is not Ellipsis:
            return f"[{', '.join(type_name(arg) for arg in args)}]"
        return f"list[{type_name(args[0])}]"
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def matches(value, expected) -> bool:
    """Whether a JSON value fits an annotation (elements of ``list[X]`` / ``tuple[X, ...]`` are checked too)."""
    expected = _strip_annotated(expected)
    if expected in (inspect.Parameter.empty, Any):
        return True
    origin, args = typing.get_origin(expected), typing.get_args(expected)
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, arg) for arg in args)
    if origin is typing.Literal:
        return any(value == arg and type(value) is type(arg) for arg in args)
    if expected is None or expected is type(None):
        return value is None
    base = origin or expected
    if base in (list, tuple, typing.Sequence, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            return False
        if base is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(matches(v, a) for v, a in zip(value, args))
        return not args or all(matches(v, args[0]) for v in value)
    if base in (dict, typing.Mapping, collections.abc.Mapping):
        return isinstance(value, dict)
    if base is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if base is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(base, type):
        return isinstance(value, base)
    return True


def _expected_type(param: inspect.Parameter):
    """The annotation if it is resolved, else the type of the default (a None default: anything)."""
    ann = param.annotation
    if isinstance(ann, str):
        ann = inspect.Parameter.empty  # an annotation that could not be resolved
    if ann is not inspect.Parameter.empty:
        return ann
    if param.default is inspect.Parameter.empty or param.default is None:
        return inspect.Parameter.empty
    return list if isinstance(param.default, tuple) else type(param.default)


def _type_hints(obj) -> dict:
    try:
        return typing.get_type_hints(obj.__init__ if inspect.isclass(obj) else obj, include_extras=True)
    except Exception:  # e.g. a third-party annotation that names an unimportable type
        return {}


def signature_params(obj) -> tuple[dict, bool]:
    """Named parameters of ``obj`` (a class's constructor; annotations resolved) and whether it takes **kwargs."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return {}, True
    hints = _type_hints(obj)
    params, var_kw = {}, False
    for name, p in sig.parameters.items():
        if p.kind is p.VAR_KEYWORD:
            var_kw = True
        elif p.kind is not p.VAR_POSITIONAL and name != "self":
            params[name] = p.replace(annotation=hints.get(name, p.annotation))
    return params, var_kw


# ----------------------------------------------------------------------------- checking
def check_kwargs(kwargs: dict, params: dict, var_kw: bool, where: str, injected=()) -> None:
    """Raise ConfigError for an unknown, wrongly typed or missing key of ``kwargs`` (dotted under ``where``);
    a value whose parameter is annotated with :class:`ArgsOf` is checked the same way, recursively.

    ``params``/``var_kw`` as returned by :func:`signature_params`; ``injected``: parameters the code passes
    itself, which the config must not set.
    """
    for key, value in kwargs.items():
        if key in injected:
            raise ConfigError(f"'{where}.{key}' is set by the code and must not be in the config")
        if key not in params:
            if var_kw:
                continue
            raise ConfigError(f"unknown key '{where}.{key}'{closest(key, params)}")
        expected = _expected_type(params[key])
        if not matches(value, expected):
            raise ConfigError(f"wrong type for '{where}.{key}': expected {type_name(expected)}, "
                              f"got {type(value).__name__} ({value!r})")
        bounds = bounds_of(params[key].annotation)
        problem = bounds.violation(value) if bounds is not None else None
        if problem:
            raise ConfigError(f"'{where}.{key}' {problem}, got {value!r}")
        schema = args_schema(params[key].annotation)
        if schema is not None and isinstance(value, dict):
            check_args(value, schema, f"{where}.{key}")
    for name, p in params.items():
        if p.default is inspect.Parameter.empty and name not in kwargs and name not in injected:
            raise ConfigError(f"missing required key '{where}.{name}'")


def check_args(kwargs: dict, target: Callable, where: str, injected=()) -> None:
    """:func:`check_kwargs` against the signature of ``target``."""
    params, var_kw = signature_params(target)
    check_kwargs(kwargs, params, var_kw, where, injected)
