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
import functools
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
          default_factory: Any = dataclasses.MISSING, help: str = "", key: bool = True) -> Any:
    """A dataclass field with its constraint, tuning range and one line of help. `key=False`: not a
    key of the data (the file a recipe came from): set by the code, left out of comparisons."""
    return dataclasses.field(default=default, default_factory=default_factory, compare=key,
                             metadata={"check": check, "tune": tune, "help": help, "key": key})


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


class Invalid(Exception):
    """Raised by a config's `validate()` for a rule across its fields; `build` and `edit` turn it into
    one KitError naming the file and where (`key`: the field the message is about, if one is)."""

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.message, self.key = message, key

    def text(self, source: str, where: str) -> str:
        if self.key is not None:
            return f"{source}: {where}{self.key} {self.message}"
        return f"{source}: {where[:-1]}: {self.message}" if where else f"{source}: {self.message}"


def mapping(raw: Any, source: str, where: str) -> dict:
    """A section's data as a mapping (empty for a key left empty), or one KitError naming it."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise KitError(f"{source}: {where[:-1] or 'the recipe'} must be a mapping of keys, got {show(raw)}")
    return raw


def check_keys(raw: dict, valid, source: str, where: str) -> None:
    """Every key of `raw` one of `valid`, or one KitError with "did you mean" and the valid keys."""
    for key in raw:
        if key not in valid:
            raise KitError(f"{source}: unknown key {where + str(key)!r}{did_you_mean(key, valid)}; "
                           f"valid keys{' in ' + where[:-1] if where else ''}: {', '.join(valid)}")


@functools.cache
def keys_of(cls: type) -> dict[str, dataclasses.Field]:
    """The fields of a config that are keys of its data (not `param(key=False)`)."""
    return {f.name: f for f in dataclasses.fields(cls) if f.init and f.metadata.get("key", True)}


@functools.cache
def hints_of(cls: type) -> dict[str, Any]:
    """A config's field types, its string annotations evaluated once (the tuner edits in a loop)."""
    return typing.get_type_hints(cls)


def build(cls: type, raw: Any, source: str, where: str = "", fill: dict | None = None, validate: bool = True):
    """Plain data -> the dataclass `cls`, every key checked, then the class's `validate()` (rules
    across fields; it raises Invalid); `where` is the dotted prefix of the keys in messages
    ("head." ...). `fill`: values for keys the data does not give. A class whose data has another
    shape (a registry's names as keys) parses itself: `from_config(raw, source, where, validate)`.
    A class with `NULL_IS_DEFAULT` reads `key: null` as the key left out (a blend recipe's
    sections, as written by hand). `validate=False`: the rules across fields are left to one
    `validate_all` later (an edit that sets a whole section)."""
    raw = mapping(raw, source, where)
    fields = keys_of(cls)
    hints = hints_of(cls)
    check_keys(raw, fields, source, where)
    values = dict(fill or {})
    for name, value in raw.items():
        if value is None and getattr(cls, "NULL_IS_DEFAULT", False) and not _takes_none(hints[name]):
            continue
        values[name] = checked(fields[name], hints[name], value, source, where + name, validate)
    for name, f in fields.items():
        if name not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise KitError(f"{source}: missing key {where + name!r}")
    obj = cls(**values)
    return validated(obj, source, where) if validate else obj


def _takes_none(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType) and type(None) in typing.get_args(tp)


def validated(obj: Any, source: str, where: str = ""):
    """`obj` after its own `validate()`, an Invalid as one KitError."""
    validate = getattr(obj, "validate", None)
    if validate is not None:
        try:
            validate()
        except Invalid as e:
            raise KitError(e.text(source, where)) from None
    return obj


def checked(f: dataclasses.Field, tp: Any, value: Any, source: str, key: str, validate: bool = True) -> Any:
    """`value` converted to the field's type `tp` and held to its constraint."""
    out = convert(tp, value, source, key, validate)
    check = f.metadata.get("check")
    if check is not None and isinstance(out, dict):  # a mapping's constraint holds for each value
        for k, v in out.items():
            if not check(v):
                given = value.get(k, v) if isinstance(value, dict) else v
                raise KitError(f"{source}: {key}.{k} = {show(given)} "
                               f"{'is not allowed' if isinstance(check, Rule) else 'is out of range'}; expected {check}")
    elif check is not None and out is not None and not check(out):
        if isinstance(check, OneOf):
            why = check.explain(value)
        elif isinstance(check, Interval):  # "an integer >= 2", "a number in [0, 1)"
            bare = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
            why = f"is out of range; expected {describe(bare[0])} {check}"
        else:  # a Rule: a shape or a name, not a range
            why = f"is not allowed; expected {check}"
        raise KitError(f"{source}: {key} = {show(value)} {why}")
    return out


# ----------------------------------------------------------------------------------- typed edits
def edit(obj: Any, path: str, value: Any, source: str, where: str = "") -> Any:
    """A copy of the config `obj` with the value at the dotted `path` ("members.0.weight") replaced,
    converted and checked as `build` would; rules across fields are left to one `validate_all` after
    every edit (edits in turn may pass through states no recipe could hold). A class may take the
    edit of its part itself (`edited(parts, value, source, where)`: a registry-shaped section); one
    with an `exclusive` tuple clears the others of those keys when one is set. `where`: the path of
    `obj` itself, for messages."""
    return _edit(obj, path.split("."), value, source, where)


def _edit(obj: Any, parts: list[str], value: Any, source: str, where: str) -> Any:
    full = where + ".".join(parts)
    if hasattr(obj, "edited"):
        return obj.edited(parts, value, source, where)
    if isinstance(obj, tuple):
        try:
            i = int(parts[0])
            if i < 0:
                raise IndexError(i)
            item = obj[i]
        except (ValueError, IndexError):
            raise KitError(f"{source}: {full!r}: no item {parts[0]!r} (there are {len(obj)})") from None
        if len(parts) == 1:
            raise KitError(f"{source}: {full!r} names a list item, not a key")
        return obj[:i] + (_edit(item, parts[1:], value, source, f"{where}{i}."),) + obj[i + 1:]
    if not dataclasses.is_dataclass(obj):
        raise KitError(f"{source}: {full!r}: {where[:-1]} is a value, not a section")
    fields = keys_of(type(obj))
    name = parts[0]
    if name not in fields:
        raise KitError(f"{source}: {full!r}: no key {name!r}{did_you_mean(name, fields)}")
    tp = hints_of(type(obj))[name]
    if len(parts) == 2 and dict in [typing.get_origin(a) for a in (tp, *typing.get_args(tp))]:
        value, parts = {**(getattr(obj, name) or {}), parts[1]: value}, parts[:1]  # one value of a mapping
    if len(parts) > 1:
        return dataclasses.replace(obj, **{name: _edit(getattr(obj, name), parts[1:], value, source, f"{where}{name}.")})
    new = {name: checked(fields[name], tp, value, source, where + name, validate=False)}
    if name in getattr(obj, "exclusive", ()):
        new.update({other: None for other in obj.exclusive if other != name})
    return dataclasses.replace(obj, **new)


def validate_all(obj: Any, source: str, where: str = "") -> Any:
    """Every `validate()` of a config tree, children first (after edits); returns `obj`."""
    if isinstance(obj, tuple):
        for i, item in enumerate(obj):
            validate_all(item, source, f"{where}{i}.")
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        # a registry-shaped section names its parts itself (`children`: (key, part) pairs)
        parts = obj.children() if hasattr(obj, "children") else ((name, getattr(obj, name)) for name in keys_of(type(obj)))
        for name, part in parts:
            validate_all(part, source, f"{where}{name}.")
        validated(obj, source, where)
    return obj


def convert(tp: Any, value: Any, source: str, key: str, validate: bool = True) -> Any:
    """Check `value` against the annotation `tp`; return it converted (lists to tuples...)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp) and hasattr(tp, "from_config"):
        return tp.from_config(value, source, key + ".", validate)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, source, key + ".", validate=validate)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # Optional[X]: X's own message says what is wrong
            return convert(options[0], value, source, key, validate)
        for option in (a for a in args if a is not type(None)):
            try:
                return convert(option, value, source, key, validate)
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
        return [convert(args[0], v, source, f"{key}[{i}]", validate) for i, v in enumerate(value)]
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            if not isinstance(value, (list, tuple)):
                raise KitError(f"{source}: {key} must be a list, got {show(value)}")
            return tuple(convert(args[0], v, source, f"{key}[{i}]", validate) for i, v in enumerate(value))
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
