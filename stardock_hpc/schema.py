"""A small declarative schema: one description of a file's shape gives both validation (with
messages that name the file, line, key path and what is allowed) and the published JSON Schema.

Spec, site config and catalog entries are described with these types; nothing else validates.
Fixed key sets everywhere (JSON Schema's additionalProperties: false).
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

from stardock_hpc.errors import UsageError
from stardock_hpc.yamlfile import Document, KeyPath, format_path


class Invalid(ValueError):
    """Raised by a field's extra check; becomes a UsageError with file, line and key path."""


@dataclass
class Context:
    doc: Document

    def fail(self, path: KeyPath, problem: str) -> UsageError:
        line = self.doc.line(path)
        where = f"{self.doc.path}:{line}" if line else self.doc.path
        return UsageError(f"{where}: {format_path(path)}: {problem}")


_KIND_NAMES = {dict: "a mapping", list: "a list", str: "a string", bool: "true/false",
               int: "a number", float: "a number", type(None): "nothing (null)"}


def _describe(value: Any) -> str:
    kind = _KIND_NAMES.get(type(value), type(value).__name__)
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        text = repr(value)
        return f"{kind} {text if len(text) <= 60 else text[:57] + '...'}"
    return kind


class Type:
    description = ""

    def validate(self, value: Any, path: KeyPath, ctx: Context) -> Any:
        raise NotImplementedError

    def json_schema(self) -> Dict[str, Any]:
        raise NotImplementedError

    def _with_doc(self, schema: Dict[str, Any]) -> Dict[str, Any]:
        if self.description:
            schema["description"] = self.description
        return schema


class Str(Type):
    """A string, optionally matching a pattern or one of fixed choices.

    numbers=True accepts YAML numbers too and turns them into strings (`OMP_NUM_THREADS: 1`).
    """

    def __init__(self, description: str = "", *, pattern: Optional[str] = None,
                 pattern_help: str = "", choices: Optional[Sequence[str]] = None, min_len: int = 1,
                 max_len: int = 4096, numbers: bool = False,
                 check: Optional[Callable[[str], None]] = None) -> None:
        self.description = description
        self.pattern = pattern
        self.pattern_help = pattern_help
        self.choices = tuple(choices) if choices is not None else None  # None: any value
        self.min_len, self.max_len = min_len, max_len
        self.numbers = numbers
        self.check = check

    def validate(self, value: Any, path: KeyPath, ctx: Context) -> str:
        if self.numbers and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            hint = ""
            if isinstance(value, bool):
                hint = " (YAML reads yes/no/true/false/on/off as booleans: quote it)"
            elif value is None:
                hint = " (the value is empty)"
            raise ctx.fail(path, f"must be a string, got {_describe(value)}{hint}")
        if self.choices is not None and value not in self.choices:
            raise ctx.fail(path, f"{value!r} is not one of: {', '.join(self.choices) or '(none)'}"
                           + _did_you_mean(value, self.choices))
        if len(value) < self.min_len:
            raise ctx.fail(path, "must not be empty" if self.min_len == 1
                           else f"must be at least {self.min_len} characters")
        if len(value) > self.max_len:
            raise ctx.fail(path, f"is {len(value)} characters long; at most {self.max_len} allowed")
        if "\x00" in value:
            raise ctx.fail(path, "must not contain a NUL character")
        if self.pattern and not re.fullmatch(self.pattern, value):
            help_text = self.pattern_help or f"must match {self.pattern}"
            raise ctx.fail(path, f"{value!r} is not allowed: {help_text}")
        if self.check:
            try:
                self.check(value)
            except Invalid as exc:
                raise ctx.fail(path, f"{value!r}: {exc}") from None
        return value

    def json_schema(self) -> Dict[str, Any]:
        schema: Dict[str, Any] = {"type": "string", "minLength": self.min_len, "maxLength": self.max_len}
        if self.numbers:
            schema = {"type": ["string", "number"]}
        if self.choices is not None:
            schema["enum"] = list(self.choices)
        if self.pattern:
            schema["pattern"] = f"^(?:{self.pattern})$"
        return self._with_doc(schema)


class Bool(Type):
    def __init__(self, description: str = "") -> None:
        self.description = description

    def validate(self, value: Any, path: KeyPath, ctx: Context) -> bool:
        if not isinstance(value, bool):
            raise ctx.fail(path, f"must be true or false, got {_describe(value)}")
        return value

    def json_schema(self) -> Dict[str, Any]:
        return self._with_doc({"type": "boolean"})


class Int(Type):
    def __init__(self, description: str = "", *, minimum: int = 0, maximum: Optional[int] = None) -> None:
        self.description = description
        self.minimum, self.maximum = minimum, maximum

    def validate(self, value: Any, path: KeyPath, ctx: Context) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ctx.fail(path, f"must be a whole number, got {_describe(value)}")
        if value < self.minimum or (self.maximum is not None and value > self.maximum):
            upper = f" and at most {self.maximum}" if self.maximum is not None else ""
            raise ctx.fail(path, f"must be at least {self.minimum}{upper}, got {value}")
        return value

    def json_schema(self) -> Dict[str, Any]:
        schema: Dict[str, Any] = {"type": "integer", "minimum": self.minimum}
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        return self._with_doc(schema)


class ListOf(Type):
    def __init__(self, item: Type, description: str = "", *, unique: bool = False,
                 max_items: int = 1000, min_items: int = 0) -> None:
        self.item = item
        self.description = description
        self.unique = unique
        self.max_items, self.min_items = max_items, min_items

    def validate(self, value: Any, path: KeyPath, ctx: Context) -> Tuple[Any, ...]:
        if not isinstance(value, list):
            raise ctx.fail(path, f"must be a list, got {_describe(value)}")
        if len(value) < self.min_items:
            raise ctx.fail(path, "must not be empty" if self.min_items == 1
                           else f"needs at least {self.min_items} items")
        if len(value) > self.max_items:
            raise ctx.fail(path, f"has {len(value)} items; at most {self.max_items} allowed")
        out = tuple(self.item.validate(v, path + (i,), ctx) for i, v in enumerate(value))
        if self.unique:
            seen = set()
            for i, v in enumerate(out):
                if v in seen:
                    raise ctx.fail(path + (i,), f"{v!r} is listed twice")
                seen.add(v)
        return out

    def json_schema(self) -> Dict[str, Any]:
        schema = {"type": "array", "items": self.item.json_schema(), "maxItems": self.max_items}
        if self.min_items:
            schema["minItems"] = self.min_items
        if self.unique:
            schema["uniqueItems"] = True
        return self._with_doc(schema)


class MapOf(Type):
    """A mapping with free keys (matching key_pattern) and values of one type: `env`, `labels`."""

    def __init__(self, value: Type, description: str = "", *, key_pattern: str,
                 key_help: str, max_items: int = 500) -> None:
        self.value = value
        self.description = description
        self.key_pattern, self.key_help = key_pattern, key_help
        self.max_items = max_items

    def validate(self, value: Any, path: KeyPath, ctx: Context) -> Dict[str, Any]:
        if not isinstance(value, dict):
            raise ctx.fail(path, f"must be a mapping of names to values, got {_describe(value)}")
        if len(value) > self.max_items:
            raise ctx.fail(path, f"has {len(value)} entries; at most {self.max_items} allowed")
        out = {}
        for key, item in value.items():
            if not isinstance(key, str) or not re.fullmatch(self.key_pattern, key):
                raise ctx.fail(path + (key,), f"the name {key!r} is not allowed: {self.key_help}")
            out[key] = self.value.validate(item, path + (key,), ctx)
        return out

    def json_schema(self) -> Dict[str, Any]:
        return self._with_doc({"type": "object", "maxProperties": self.max_items,
                               "propertyNames": {"pattern": f"^(?:{self.key_pattern})$"},
                               "additionalProperties": self.value.json_schema()})


@dataclass
class Key:
    type: Type
    required: bool = False
    default: Any = None


class Obj(Type):
    """A mapping with a fixed set of keys; `make` turns the validated dict into the model type."""

    def __init__(self, keys: Mapping[str, Key], description: str = "", *,
                 make: Optional[Callable[..., Any]] = None, title: str = "",
                 one_of: Tuple[str, ...] = ()) -> None:
        self.keys = dict(keys)
        self.description = description
        self.make = make
        self.title = title
        self.one_of = one_of            # exactly one of these keys must be given

    def validate(self, value: Any, path: KeyPath, ctx: Context) -> Any:
        if value is None and not any(k.required for k in self.keys.values()):
            value = {}
        if not isinstance(value, dict):
            raise ctx.fail(path, f"must be a mapping with keys {', '.join(self.keys)}; "
                           f"got {_describe(value)}")
        allowed = ", ".join(self.keys)
        for key in value:
            if key not in self.keys:
                where = "at the top level" if not path else f"in {format_path(path)}"
                raise ctx.fail(path + (key,), f"unknown key {key!r} {where}; allowed keys: "
                               f"{allowed}" + _did_you_mean(str(key), self.keys))
        if self.one_of and sum(k in value for k in self.one_of) != 1:
            raise ctx.fail(path, f"give exactly one of {', '.join(self.one_of)} here")
        out = {}
        for name, key in self.keys.items():
            if name in value:
                out[name] = key.type.validate(value[name], path + (name,), ctx)
            elif key.required:
                raise ctx.fail(path, f"the required key {name!r} is missing")
            else:
                out[name] = key.default
        return self.make(**out) if self.make else out

    def json_schema(self) -> Dict[str, Any]:
        schema: Dict[str, Any] = {
            "type": "object",
            "properties": {name: key.type.json_schema() for name, key in self.keys.items()},
            "additionalProperties": False,
        }
        required = [name for name, key in self.keys.items() if key.required]
        if required:
            schema["required"] = required
        if self.one_of:
            schema["oneOf"] = [{"required": [name]} for name in self.one_of]
        if self.title:
            schema["title"] = self.title
        return self._with_doc(schema)


class Either(Type):
    """One of several shapes, told apart by the YAML type (`command: "x y"` or `command: [x, y]`)."""

    def __init__(self, *options: Tuple[type, Type], description: str = "") -> None:
        self.options = options
        self.description = description

    def validate(self, value: Any, path: KeyPath, ctx: Context) -> Any:
        for pytype, option in self.options:
            if isinstance(value, pytype) and not (pytype is int and isinstance(value, bool)):
                return option.validate(value, path, ctx)
        kinds = " or ".join(_KIND_NAMES.get(t, t.__name__) for t, _ in self.options)
        raise ctx.fail(path, f"must be {kinds}, got {_describe(value)}")

    def json_schema(self) -> Dict[str, Any]:
        return self._with_doc({"oneOf": [o.json_schema() for _, o in self.options]})


def _did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.7)
    return f" (did you mean {close[0]!r}?)" if close else ""


def validate_document(doc: Document, root: Type) -> Any:
    return root.validate(doc.data, (), Context(doc))


def json_schema(root: Type, *, title: str, schema_id: str) -> Dict[str, Any]:
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": schema_id, "title": title}
    schema.update(root.json_schema())
    return schema
