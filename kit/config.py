"""One config engine for every recipe kind: training recipes (`models/*.yaml`, a member's
`recipe.yaml`), blend recipes (`blends/*.yaml`) and the parameters of the post-processing plug-ins.

A config is a frozen dataclass. Each field's type says what YAML value it takes; its constraint
(`param(..., check=Interval(0, 1))`, scikit-learn style: data, not code) says which values are
allowed, and a plug-in's field may carry its tuning range (`tune=Tuning(0, 1)`). `build` turns
plain data into the dataclass or raises one KitError naming the file and the key, with "did you
mean" for near misses; past it the code trusts the config.

Every recipe module keeps one contract: `load_recipe(path)` and `recipe_from_dict(raw, source)`
read, `dump_recipe(recipe) -> str` gives the YAML text, `save_recipe(recipe, path, ...)` writes it
atomically; a dumped recipe loads back equal.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Union

import yaml

from kit.errors import KitError


# ----------------------------------------------------------------------------------- constraints
@dataclass(frozen=True)
class Interval:
    """low..high (either may be None: unbounded); `closed` says which ends belong to it."""

    low: float | None = None
    high: float | None = None
    closed: Literal["both", "left", "right", "neither"] = "both"

    def __call__(self, value: Any) -> bool:
        if self.low is not None and (value < self.low or (value == self.low and self.closed in ("right", "neither"))):
            return False
        return not (self.high is not None and (value > self.high or (value == self.high and self.closed in ("left", "neither"))))

    def __str__(self) -> str:
        lo_in, hi_in = self.closed in ("both", "left"), self.closed in ("both", "right")
        if self.high is None:
            return f"{'>=' if lo_in else '>'} {self.low:g}"
        if self.low is None:
            return f"{'<=' if hi_in else '<'} {self.high:g}"
        return f"in {'[' if lo_in else '('}{self.low:g}, {self.high:g}{']' if hi_in else ')'}"


@dataclass(frozen=True)
class Rule:
    """Any other constraint: a test and the words that say what it allows."""

    test: Callable[[Any], bool]
    text: str

    def __call__(self, value: Any) -> bool:
        return bool(self.test(value))

    def __str__(self) -> str:
        return self.text


class OneOf:
    """One of a set of names, given or read when checked (a registry's names: plug-ins register late)."""

    def __init__(self, names: tuple[str, ...] | Callable[[], Any]):
        self.names = names

    def options(self) -> list[str]:
        return list(self.names() if callable(self.names) else self.names)

    def __call__(self, value: Any) -> bool:
        return value in self.options()

    def __str__(self) -> str:
        return " or ".join(self.options())

    def explain(self, value: Any) -> str:
        near = difflib.get_close_matches(str(value), self.options(), n=1)
        return f"is not allowed; expected {self}" + (f"; did you mean {near[0]!r}?" if near else "")


@dataclass(frozen=True)
class Tuning:
    """The range a tuner searches for a field (log: on a log scale)."""

    low: float
    high: float
    log: bool = False


def param(default: Any = dataclasses.MISSING, *, check: Interval | Rule | OneOf | None = None, tune: Tuning | None = None,
          default_factory: Any = dataclasses.MISSING, help: str = "") -> Any:
    """A dataclass field with its constraint, tuning range and one line of help."""
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={"check": check, "tune": tune, "help": help})


def tuning_of(cls: type, name: str) -> Tuning | None:
    return {f.name: f for f in dataclasses.fields(cls)}[name].metadata.get("tune")


# ------------------------------------------------------------------------------------ registries
class Registry(dict):
    """Plug-ins of one kind by name (timm's register_model): `@REGISTRY.register` on the class,
    whose `name` attribute is its key in recipes (the recipes' checks give a misspelling its
    "did you mean")."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, plugin):
        if plugin.name in self:
            raise ValueError(f"two {self.kind}s named {plugin.name!r}: {self[plugin.name]} and {plugin}")
        self[plugin.name] = plugin
        return plugin

    def unregister(self, name: str) -> None:
        del self[name]


# ------------------------------------------------------------------------------------- building
def did_you_mean(key: Any, valid) -> str:
    close = difflib.get_close_matches(str(key), [str(v) for v in valid], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def build(cls: type, raw: Any, source: str, where: str = "", fill: dict | None = None):
    """Plain data -> the dataclass `cls`, every key checked; `where` is the dotted prefix of the
    keys in messages ("head." ...). `fill`: values for keys the data does not give."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise KitError(f"{source}: {where[:-1] or 'the recipe'} must be a mapping of keys, got {show(raw)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    for key in raw:
        if key not in fields:
            raise KitError(f"{source}: unknown key {where + str(key)!r}{did_you_mean(key, fields)}; "
                           f"valid keys{' in ' + where[:-1] if where else ''}: {', '.join(fields)}")
    values = dict(fill or {})
    for name, value in raw.items():
        key = where + name
        values[name] = convert(hints[name], value, source, key)
        check = fields[name].metadata.get("check")
        if check is not None and isinstance(values[name], dict):  # a mapping's constraint holds for each value
            for k, v in values[name].items():
                if not check(v):
                    raise KitError(f"{source}: {key}.{k} = {show(v)} is out of range; expected {check}")
        elif check is not None and values[name] is not None and not check(values[name]):
            if isinstance(check, OneOf):
                why = check.explain(value)
            elif isinstance(check, Interval):  # "an integer >= 2", "a number in [0, 1)"
                bare = [a for a in typing.get_args(hints[name]) if a is not type(None)] or [hints[name]]
                why = f"is out of range; expected {describe(bare[0])} {check}"
            else:
                why = f"is out of range; expected {check}"
            raise KitError(f"{source}: {key} = {show(value)} {why}")
    return cls(**values)


def convert(tp: Any, value: Any, source: str, key: str) -> Any:
    """Check `value` against the annotation `tp`; return it converted (lists to tuples...)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, source, key + ".")
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # Optional[X]: X's own message says what is wrong
            return convert(options[0], value, source, key)
        for option in (a for a in args if a is not type(None)):
            try:
                return convert(option, value, source, key)
            except KitError:
                pass
        words = [str(w) for a in args if typing.get_origin(a) is Literal for w in typing.get_args(a)]
        near = difflib.get_close_matches(str(value), words, n=1) if isinstance(value, str) else []
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise KitError(f"{source}: {key} = {show(value)} is not allowed; expected {describe(tp)}{hint}")
    if origin is Literal:
        if value in args and type(value) is type(args[args.index(value)]):
            return value
        near = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise KitError(f"{source}: {key} = {show(value)} is not allowed; expected {describe(tp)}{hint}")
    if origin is list:
        if not isinstance(value, list):
            raise KitError(f"{source}: {key} must be a list, got {show(value)}")
        return [convert(args[0], v, source, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            if not isinstance(value, (list, tuple)):
                raise KitError(f"{source}: {key} must be a list, got {show(value)}")
            return tuple(convert(args[0], v, source, f"{key}[{i}]") for i, v in enumerate(value))
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise KitError(f"{source}: {key} = {show(value)} must be {describe(tp)}")
        return tuple(convert(a, v, source, key) for a, v in zip(args, value))
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise KitError(f"{source}: {key} must be a mapping, got {show(value)}")
        if origin is dict:  # dict[K, V]: every key and value checked
            return {convert(args[0], k, source, key): convert(args[1], v, source, f"{key}.{k}") for k, v in value.items()}
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise KitError(f"{source}: {key} = {show(value)} must be a finite number")
            return float(value)
        if isinstance(value, str):  # YAML reads 1e-3 (no dot) as a string
            try:
                return convert(float, float(value), source, key)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    raise KitError(f"{source}: {key} = {show(value)} must be {describe(tp)}")


def describe(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in args if a is not type(None)) + (" or null" if type(None) in args else "")
    if origin is Literal:
        return " or ".join(str(a).lower() if isinstance(a, bool) else str(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {describe(args[0]).split(' ', 1)[-1]}s"
        return f"a list of {len(args)} {describe(args[0]).split(' ', 1)[-1]}s"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a mapping"}.get(tp, str(tp))


def show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def plain(value: Any) -> Any:
    """Dataclasses, tuples and lists as plain YAML-able data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last: a
    recipe with two `steps:` would lose the first without a word)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: its keys may be overridden
                continue
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | os.PathLike, what: str) -> object:
    """Parse a YAML file (a recipe); a missing file, bad YAML or a key given twice is one KitError naming it."""
    path = Path(path)
    if not path.is_file():
        raise KitError(f"{path}: {what} not found")
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 (a safe loader)
    except UnicodeDecodeError as e:
        raise KitError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); save the {what} as UTF-8") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise KitError(f"{path}: not valid YAML{where} ({getattr(e, 'problem', None) or str(e).splitlines()[0]})") from None


def dump_yaml(data: Any, note: list[str] | tuple[str, ...] = ()) -> str:
    """The YAML text every recipe kind writes: keys in the dataclasses' order, `note` lines as comments on top."""
    return "".join(f"# {line}\n" for line in note) + yaml.safe_dump(data, sort_keys=False, default_flow_style=None,
                                                                    width=100)


# --------------------------------------------------------------------------- hand-checked sections
class Section:
    """One mapping of a recipe with checked accessors, for the sections whose shape is not one
    dataclass (a blend recipe's members, its tune section); messages say `file: where.key: ...`."""

    def __init__(self, raw: Any, where: str, source: str):
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            what = where or "the recipe"
            raise KitError(f"{source}: {what} must be a mapping of keys to values, got {type(raw).__name__} {raw!r}")
        self.raw, self.where, self.source = raw, where, source

    def _key(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def fail(self, key: str, message: str):
        raise KitError(f"{self.source}: {self._key(key)} {message}")

    def keys(self, valid, required=()) -> None:
        for key in self.raw:
            if key not in valid:
                raise KitError(
                    f"{self.source}: unknown key {self._key(str(key))!r}{did_you_mean(key, valid)}; "
                    f"valid keys{' in ' + self.where if self.where else ''}: {', '.join(valid)}"
                )
        for key in required:
            if key not in self.raw or self.raw[key] is None:
                raise KitError(f"{self.source}: missing key {self._key(key)!r}")

    def has(self, key: str) -> bool:
        return key in self.raw

    def get(self, key: str, default: Any = None) -> Any:
        return self.raw.get(key, default)

    def section(self, key: str) -> "Section":
        return Section(self.raw.get(key), self._key(key), self.source)

    def string(self, key: str, default: Any = ...) -> Any:
        if key not in self.raw or self.raw[key] is None:
            if default is ...:
                self.fail(key, "is missing")
            return default
        value = self.raw[key]
        if not isinstance(value, str) or not value.strip():
            self.fail(key, f"must be a non-empty string, got {value!r}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw.get(key, default)
        if not isinstance(value, bool):
            self.fail(key, f"must be true or false, got {value!r}")
        return value

    def number(self, key: str, default: float | None, low: float | None = None, high: float | None = None,
               low_open: bool = False) -> float | None:
        if key not in self.raw or self.raw[key] is None:
            return default
        value = self.raw[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.fail(key, f"must be a finite number, got {value!r}")
        value = float(value)
        if low is not None and (value < low or (low_open and value == low)):
            self.fail(key, f"is {value:g}; it must be {'>' if low_open else '>='} {low:g}")
        if high is not None and value > high:
            self.fail(key, f"is {value:g}; it must be <= {high:g}")
        return value

    def integer(self, key: str, default: int, low: int | None = None, high: int | None = None) -> int:
        value = self.raw.get(key, default)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"must be an integer, got {value!r}")
        if low is not None and value < low:
            self.fail(key, f"is {value}; it must be >= {low}")
        if high is not None and value > high:
            self.fail(key, f"is {value}; it must be <= {high}")
        return value
