"""The JSON Schema subset of structured output (``task.kind: structured``): checking a schema and compiling it into
a tree of nodes that ``engine.tasks.structured`` lays out on the canvas.

Supported (anything else is refused with the JSON path of the offending keyword, e.g.
``.properties.age: 'oneOf' is not supported; supported: ...``):

- ``type: object`` with ``properties`` (emitted in the given order), ``required`` (names must be properties),
  ``additionalProperties: false`` (or left out). Optional properties are always emitted too.
- ``type: string`` with optional ``maxLength``; ``type: integer`` / ``number`` with optional ``minimum`` /
  ``maximum``; ``type: boolean``.
- ``enum`` (strings and numbers, with or without a matching ``type``) and ``const`` (string, number, boolean).
- ``type: array`` with ``items`` (one schema) and ``maxItems`` (required, at most ``MAX_ITEMS``: every item slot
  is laid out), optional ``minItems``. Nesting up to ``MAX_DEPTH`` levels.
- Annotations (``title``, ``description``, ``$schema``, ``$id``, ``$comment``, ``default``, ``examples``, ...) are
  accepted and ignored.

Nothing here needs a tokenizer, so the job config checks a schema before any work starts.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_ITEMS = 16  # largest maxItems: every slot is laid out on the canvas
MAX_DEPTH = 8
MAX_ENUM_OPTIONS = 256
MAX_INT_DIGITS = 18  # integers are written with at most this many digits: a signed 64-bit integer, as most JSON
# consumers need, so bounds beyond it are refused

SUPPORTED = ("type (object, string, integer, number, boolean, array), properties, required, "
             "additionalProperties: false, maxLength, minimum, maximum, enum, const, items, minItems, maxItems")
_ANNOTATIONS = {"title", "description", "$schema", "$id", "$comment", "default", "examples", "deprecated",
                "readOnly", "writeOnly"}
_KEYWORDS = {
    "object": {"type", "properties", "required", "additionalProperties"},
    "string": {"type", "maxLength", "enum", "const"},
    "integer": {"type", "minimum", "maximum", "enum", "const"},
    "number": {"type", "minimum", "maximum", "enum", "const"},
    "boolean": {"type", "const"},
    "array": {"type", "items", "minItems", "maxItems"},
    None: {"enum", "const"},
}


class SchemaError(ValueError):
    """A schema (or template) outside the supported subset.

    Attributes:
        path: where, as ``.properties.age`` / ``.items`` (empty at the root), so callers can prefix the field.
        problem: what is wrong and what is supported.
    """

    def __init__(self, path: str, problem: str):
        self.path, self.problem = path, problem
        super().__init__(f"{path}: {problem}" if path else problem)

    def at(self, root: str) -> str:
        """The message with ``root`` (e.g. ``task.schema``) in front of the path."""
        return f"{root}{self.path}: {self.problem}"


# ------------------------------------------------------------------------------------------------ schema tree

@dataclass(frozen=True)
class Widths:
    """Hole widths in tokens per type (``task.string_tokens`` ...); a string's ``maxLength`` lowers its own."""

    string: int = 12
    integer: int = 6
    number: int = 8


@dataclass(frozen=True)
class ObjectNode:
    properties: tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class StringNode:
    max_length: int | None
    width: int


@dataclass(frozen=True)
class IntegerNode:
    minimum: int | None
    maximum: int | None
    width: int


@dataclass(frozen=True)
class NumberNode:
    minimum: float | None
    maximum: float | None
    width: int


@dataclass(frozen=True)
class EnumNode:
    """Enums, booleans (options ``True, False``) and consts (one option: literal text, no hole)."""

    options: tuple

    @property
    def quoted(self) -> bool:
        """All options are strings: the quotes are clamped and the hole holds the text between them."""
        return all(isinstance(o, str) for o in self.options)

    def texts(self) -> list[str]:
        """Each option as it is tokenized in the hole."""
        dumped = [json.dumps(o, ensure_ascii=False) for o in self.options]
        return [d[1:-1] for d in dumped] if self.quoted else dumped


@dataclass(frozen=True)
class ArrayNode:
    item: Any
    min_items: int
    max_items: int


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def compile_schema(schema: Any, widths: Widths = Widths(), path: str = "", depth: int = 0):
    """Check that ``schema`` is in the supported subset and turn it into a node tree.

    Raises:
        SchemaError: naming the JSON path and the unsupported keyword or value.
    """
    if not isinstance(schema, dict):
        raise SchemaError(path, f"must be a JSON Schema object (a mapping), got {type(schema).__name__}")
    if depth > MAX_DEPTH:
        raise SchemaError(path, f"nested deeper than {MAX_DEPTH} levels")
    for key in schema:
        if key not in _ANNOTATIONS and not any(key in keys for keys in _KEYWORDS.values()):
            raise SchemaError(path, f"{key!r} is not supported; supported: {SUPPORTED}")
    kind = schema.get("type")
    if isinstance(kind, list):
        raise SchemaError(path, f"'type' must be one type name, not a list ({kind}); supported: {SUPPORTED}")
    if kind not in _KEYWORDS or (kind is None and not ({"enum", "const"} & set(schema))):
        what = f"type {kind!r} is not supported" if kind is not None else "needs a 'type' (or 'enum' / 'const')"
        raise SchemaError(path, f"{what}; supported: {SUPPORTED}")
    for key in schema:
        if key not in _KEYWORDS[kind] and key not in _ANNOTATIONS:
            where = f"for type {kind!r}" if kind else "without a 'type'"
            raise SchemaError(path, f"{key!r} is not supported {where}; supported: {SUPPORTED}")
    if "const" in schema:
        return _const(schema, kind, path)
    if "enum" in schema:
        return _enum(schema, kind, path)
    return _COMPILERS[kind](schema, widths, path, depth)


def _const(schema: dict, kind, path: str) -> EnumNode:
    value = schema["const"]
    if "enum" in schema:
        raise SchemaError(path, "use either 'const' or 'enum', not both")
    if not (isinstance(value, str) or _is_num(value) or isinstance(value, bool)):
        raise SchemaError(f"{path}.const", f"must be a string, number or boolean, got {json.dumps(value)}")
    _check_option_type(value, kind, f"{path}.const")
    return EnumNode((value,))


def _enum(schema: dict, kind, path: str) -> EnumNode:
    options = schema["enum"]
    if not isinstance(options, list) or not options:
        raise SchemaError(f"{path}.enum", "must be a non-empty list")
    if len(options) > MAX_ENUM_OPTIONS:
        raise SchemaError(f"{path}.enum", f"has {len(options)} options; at most {MAX_ENUM_OPTIONS} are supported")
    seen = set()
    for i, value in enumerate(options):
        if not (isinstance(value, str) or _is_num(value)):
            raise SchemaError(f"{path}.enum[{i}]", f"options must be strings or numbers, got {json.dumps(value)}")
        _check_option_type(value, kind, f"{path}.enum[{i}]")
        key = json.dumps(value)
        if key in seen:
            raise SchemaError(f"{path}.enum[{i}]", f"duplicate option {key}")
        seen.add(key)
    return EnumNode(tuple(options))


def _check_option_type(value, kind, path: str) -> None:
    ok = {None: True, "string": isinstance(value, str), "boolean": isinstance(value, bool),
          "integer": _is_num(value) and float(value).is_integer(), "number": _is_num(value)}[kind]
    if not ok:
        raise SchemaError(path, f"{json.dumps(value)} is not of type {kind!r}")


def _object(schema: dict, widths: Widths, path: str, depth: int) -> ObjectNode:
    props = schema.get("properties", {})
    if not isinstance(props, dict):
        raise SchemaError(f"{path}.properties", "must be a mapping of property names to schemas")
    extra = schema.get("additionalProperties", False)
    if extra is not False:
        raise SchemaError(f"{path}.additionalProperties", "only 'false' is supported (extra properties are "
                          "never emitted); remove it or set it to false")
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise SchemaError(f"{path}.required", "must be a list of property names")
    missing = [r for r in required if r not in props]
    if missing:
        raise SchemaError(f"{path}.required", f"names properties that are not defined: {', '.join(missing)}")
    return ObjectNode(tuple((name, compile_schema(sub, widths, f"{path}.properties.{name}", depth + 1))
                            for name, sub in props.items()))


def _string(schema: dict, widths: Widths, path: str, depth: int) -> StringNode:
    max_length = schema.get("maxLength")
    if max_length is not None and not _is_count(max_length):
        raise SchemaError(f"{path}.maxLength", f"must be an integer >= 0, got {json.dumps(max_length)}")
    width = widths.string if max_length is None else min(widths.string, max_length)
    return StringNode(max_length, width)


def _bounds(schema: dict, path: str) -> tuple:
    lo, hi = schema.get("minimum"), schema.get("maximum")
    for key, v in (("minimum", lo), ("maximum", hi)):
        if v is not None and not _is_num(v):
            raise SchemaError(f"{path}.{key}", f"must be a finite number, got {json.dumps(v)}")
    if lo is not None and hi is not None and lo > hi:
        raise SchemaError(path, f"minimum ({lo}) is above maximum ({hi})")
    return lo, hi


def _integer(schema: dict, widths: Widths, path: str, depth: int) -> IntegerNode:
    lo, hi = _bounds(schema, path)
    lo = None if lo is None else math.ceil(lo)
    hi = None if hi is None else math.floor(hi)
    if lo is not None and hi is not None and lo > hi:
        raise SchemaError(path, f"no integer lies between minimum and maximum ({schema['minimum']}, "
                          f"{schema['maximum']})")
    limit = 10 ** MAX_INT_DIGITS - 1
    if (lo is not None and lo > limit) or (hi is not None and hi < -limit):
        raise SchemaError(path, f"bounds beyond {MAX_INT_DIGITS} digits are not supported")
    return IntegerNode(lo, hi, widths.integer)


def _number(schema: dict, widths: Widths, path: str, depth: int) -> NumberNode:
    lo, hi = _bounds(schema, path)
    return NumberNode(lo, hi, widths.number)


def _boolean(schema: dict, widths: Widths, path: str, depth: int) -> EnumNode:
    return EnumNode((True, False))


def _array(schema: dict, widths: Widths, path: str, depth: int) -> ArrayNode:
    if "items" not in schema:
        raise SchemaError(path, "an array needs 'items' (one schema for every item)")
    if isinstance(schema["items"], list):
        raise SchemaError(f"{path}.items", "tuple form (a list of schemas) is not supported; give one schema")
    if "maxItems" not in schema:
        raise SchemaError(path, f"an array needs 'maxItems' (at most {MAX_ITEMS}): every item slot is laid out")
    hi, lo = schema["maxItems"], schema.get("minItems", 0)
    if not _is_count(hi) or not 1 <= hi <= MAX_ITEMS:
        raise SchemaError(f"{path}.maxItems", f"must be an integer from 1 to {MAX_ITEMS}, got {json.dumps(hi)}")
    if not _is_count(lo) or lo > hi:
        raise SchemaError(f"{path}.minItems", f"must be an integer from 0 to maxItems ({hi}), got {json.dumps(lo)}")
    return ArrayNode(compile_schema(schema["items"], widths, f"{path}.items", depth + 1), lo, hi)


_COMPILERS = {"object": _object, "string": _string, "integer": _integer, "number": _number,
              "boolean": _boolean, "array": _array}


def schema_from_template(template: Any, path: str = "") -> dict:
    """A schema from an example document: objects keep their keys (all required), leaves give the types
    (string, integer, number, boolean), a list gives an array of its first element's type with ``maxItems`` =
    its length.

    Raises:
        SchemaError: for null, empty lists or objects, and lists whose elements differ in shape.
    """
    if isinstance(template, bool):
        return {"type": "boolean"}
    if isinstance(template, int):
        return {"type": "integer"}
    if isinstance(template, float):
        return {"type": "number"}
    if isinstance(template, str):
        return {"type": "string"}
    if isinstance(template, dict):
        if not template:
            raise SchemaError(path, "an empty object gives no fields; list at least one")
        return {"type": "object", "properties": {k: schema_from_template(v, f"{path}.{k}") for k, v in template.items()},
                "required": list(template), "additionalProperties": False}
    if isinstance(template, list):
        if not template:
            raise SchemaError(path, "an empty list gives no item type; give one example item")
        if len(template) > MAX_ITEMS:
            raise SchemaError(path, f"has {len(template)} items; at most {MAX_ITEMS}")
        items = [schema_from_template(v, f"{path}[{i}]") for i, v in enumerate(template)]
        if any(s != items[0] for s in items[1:]):
            raise SchemaError(path, "all items of a list must have the same shape")
        return {"type": "array", "items": items[0], "maxItems": len(template)}
    what = "null" if template is None else type(template).__name__
    raise SchemaError(path, f"{what} gives no type; use a string, integer, number, boolean, object or list")


def load_schema_file(path: str) -> dict:
    """Read a JSON Schema from a ``.json`` file. Raises ``ValueError`` with the reason."""
    p = Path(path).expanduser()
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"schema file {path!r} not found (relative paths are from the current directory)") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read schema file {path!r} ({err})") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"schema file {path!r} is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"schema file {path!r} must hold a JSON object")
    return data


def schema_validator(schema: dict):
    """A ``jsonschema`` validator for ``schema`` (its ``$schema`` draft, else 2020-12). Raises ``SchemaError``
    when the schema itself is not valid JSON Schema."""
    import jsonschema

    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as err:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.path)
        raise SchemaError(where, f"not valid JSON Schema: {err.message}") from None
    return cls(schema)
