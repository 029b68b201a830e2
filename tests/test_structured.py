"""Structured output: the schema-subset compiler, the skeleton and its masks, the renderer, the task on the tiny
engine (hypothesis: random schemas x random seeds -> output parses and validates), the config, and a real job."""

from __future__ import annotations

import json
import pickle
import random
from pathlib import Path

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import FREE, SamplingParams
from pipelines.config import ConfigError, load_config, validate_config
from engine.tasks.schema_subset import (MAX_ITEMS, ArrayNode, EnumNode, SchemaError, Widths, compile_schema,
                                     schema_from_template)
from engine.tasks.skeleton import _parse_int, _parse_number, build_skeleton, enum_width, render
from engine.tasks.structured import StructuredTask
from engine.tasks import TASKS, PromptPlan, Row, RowError
from pipelines.convert import build_task
from tests.pipeline_fixtures import ray_cluster, read_output  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 10},
        "age": {"type": "integer", "minimum": 0, "maximum": 130},
        "score": {"type": "number", "minimum": -1.5, "maximum": 1000},
        "ok": {"type": "boolean"},
        "color": {"enum": ["red", "green", "blue"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 6}, "minItems": 1, "maxItems": 3},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}


def skeleton_for(engine, schema, widths=Widths()):
    stop = [*engine.eos_ids, engine.config.pad_token_id]
    return build_skeleton(compile_schema(schema, widths), engine.tokenizer, engine.config.vocab_size, stop)


def fill(sk, per_hole: list[list[int]]) -> list[int]:
    """The skeleton's layout with each hole's positions set to the given tokens (padded with EOS)."""
    ids = list(sk.known)
    eos = min(sk.stop - {0})
    for (start, width), tokens in zip(sk.holes, per_hole, strict=True):
        ids[start:start + width] = (tokens + [eos] * width)[:width]
    return ids


# ------------------------------------------------------------------------------------------------ compiler

@pytest.mark.parametrize("schema, message", [
    ({"type": "object", "properties": {"age": {"oneOf": [{"type": "integer"}]}}},
     ".properties.age: 'oneOf' is not supported; supported: type (object"),
    ({"anyOf": [{"type": "string"}]}, "'anyOf' is not supported"),
    ({"type": "object", "allOf": []}, "'allOf' is not supported"),
    ({"type": "object", "properties": {"a": {"$ref": "#/$defs/x"}}}, ".properties.a: '$ref' is not supported"),
    ({"type": "object", "patternProperties": {}}, "'patternProperties' is not supported"),
    ({"type": "object", "additionalProperties": True}, ".additionalProperties: only 'false' is supported"),
    ({"type": "object", "additionalProperties": {"type": "string"}}, ".additionalProperties: only 'false'"),
    ({"type": "string", "pattern": "^a"}, "'pattern' is not supported; supported"),
    ({"type": "string", "format": "email"}, "'format' is not supported; supported"),
    ({"type": "string", "minLength": 2}, "'minLength' is not supported; supported"),
    ({"type": "integer", "maxLength": 2}, "'maxLength' is not supported for type 'integer'"),
    ({"type": ["string", "null"]}, "'type' must be one type name, not a list"),
    ({"type": "null"}, "type 'null' is not supported"),
    ({"description": "no type"}, "needs a 'type' (or 'enum' / 'const')"),
    ({"type": "array", "items": {"type": "string"}}, "an array needs 'maxItems'"),
    ({"type": "array", "items": {"type": "string"}, "maxItems": MAX_ITEMS + 1}, ".maxItems: must be an integer from 1"),
    ({"type": "array", "items": {"type": "string"}, "maxItems": 2, "minItems": 3}, ".minItems: must be an integer"),
    ({"type": "array", "items": [{"type": "string"}], "maxItems": 2}, ".items: tuple form"),
    ({"type": "array", "maxItems": 2}, "an array needs 'items'"),
    ({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["b"]},
     ".required: names properties that are not defined: b"),
    ({"enum": ["a", None]}, ".enum[1]: options must be strings or numbers, got null"),
    ({"enum": []}, ".enum: must be a non-empty list"),
    ({"enum": ["a", "a"]}, ".enum[1]: duplicate option"),
    ({"type": "string", "enum": ["a", 1]}, '.enum[1]: 1 is not of type \'string\''),
    ({"type": "integer", "minimum": 0.2, "maximum": 0.8}, "no integer lies between minimum and maximum"),
    ({"type": "number", "minimum": 3, "maximum": 1}, "minimum (3) is above maximum (1)"),
    ({"type": "number", "minimum": "0"}, ".minimum: must be a finite number"),
    ({"type": "object", "properties": {"a": True}}, ".properties.a: must be a JSON Schema object"),
    ({"type": "boolean", "const": 3}, ".const: 3 is not of type 'boolean'"),
])
def test_unsupported_schemas_name_the_path_and_keyword(schema, message):
    with pytest.raises(SchemaError) as err:
        compile_schema(schema)
    assert message in str(err.value)


def test_nesting_limit():
    schema = {"type": "string"}
    for _ in range(9):
        schema = {"type": "array", "items": schema, "maxItems": 1}
    with pytest.raises(SchemaError, match=r"^\.items(\.items)*: nested deeper than 8 levels"):
        compile_schema(schema)


def test_compile_widths_and_types():
    root = compile_schema(PERSON, Widths(string=8, integer=3, number=5))
    props = dict(root.properties)
    assert props["name"].width == 8 and props["name"].max_length == 10
    assert props["tags"] == ArrayNode(compile_schema({"type": "string", "maxLength": 6}, Widths(8, 3, 5)), 1, 3)
    assert props["tags"].item.width == 6  # maxLength below string_tokens wins
    assert props["ok"] == EnumNode((True, False)) and props["age"].width == 3 and props["score"].width == 5
    assert compile_schema({"type": "integer", "minimum": 0.5, "maximum": 9.9}).minimum == 1


def test_schema_from_template():
    schema = schema_from_template({"name": "Ada", "age": 36, "height": 1.7, "retired": False,
                                   "langs": ["en", "fr"], "address": {"city": "London"}})
    assert schema["required"] == ["name", "age", "height", "retired", "langs", "address"]
    assert schema["properties"]["langs"] == {"type": "array", "items": {"type": "string"}, "maxItems": 2}
    assert schema["properties"]["retired"] == {"type": "boolean"}
    assert schema["properties"]["height"] == {"type": "number"}
    compile_schema(schema)
    for bad, message in [({"a": None}, ".a: null gives no type"), ({"a": []}, ".a: an empty list"),
                         ({"a": [1, "x"]}, ".a: all items of a list must have the same shape"), ({}, "empty object")]:
        with pytest.raises(SchemaError, match=message):
            schema_from_template(bad)


# ------------------------------------------------------------------------------------------------ rendering

@pytest.mark.parametrize("text, value", [("", 0), ("007", 7), ("-12", -12), ("-", 0), ("1-2", 12),
                                         ("9" * 30, int("9" * 18))])
def test_parse_int(text, value):
    assert _parse_int(text) == value


@pytest.mark.parametrize("text, value", [("", 0), (".", 0), ("5.", 5), (".5", 0.5), ("-03.250", -3.25),
                                         ("1.2.3", 1.23), ("1" * 20 + ".1234567", float("1" * 15 + ".123456"))])
def test_parse_number(text, value):
    assert _parse_number(text) == value and type(_parse_number(text)) is type(value)


def test_enum_width():
    assert enum_width([[5], [6], [7]]) == 1
    assert enum_width([[5, 1], [5, 2]]) == 2
    assert enum_width([[5], [5, 2]]) == 2  # "1" vs "10": the shorter one ends (end token) where the other goes on
    assert enum_width([[]]) == 1


def test_skeleton_text_and_masks(tiny_engine):
    tok = tiny_engine.tokenizer
    sk = skeleton_for(tiny_engine, PERSON, Widths(string=4, integer=3, number=3))
    # the clamped text is the JSON skeleton; holes are where the values go
    literal = tok.decode([t for t in sk.known if t != FREE])
    assert literal == ('{"name": "", "age": , "score": , "ok": , "color": "", "tags": ["", "", ""]}')
    assert [w for _, w in sk.holes] == [4, 3, 3, 1, 1, 4, 4, 4]
    assert all(sk.known[s:s + w] == [FREE] * w for s, w in sk.holes)
    assert [a for a, k in zip(sk.allowed, sk.known) if k != FREE] == [-1] * sum(k != FREE for k in sk.known)
    strings = tok.token_strings()
    stop = sk.stop

    def allowed(pos):
        return {i for i in sk.masks[sk.allowed[pos]].nonzero().flatten().tolist()}

    age_start = sk.holes[1][0]
    assert {strings[i] for i in allowed(age_start) - stop} <= {s for s in strings if s.isdigit()}
    assert stop <= allowed(age_start)  # "empty"
    score_start = sk.holes[2][0]
    assert "-" in {strings[i] for i in allowed(score_start)} and "-" not in {strings[i] for i in allowed(score_start + 1)}
    name = allowed(sk.holes[0][0]) - stop
    assert name and not any('"' in strings[i] or "\\" in strings[i] or "\n" in strings[i] for i in name)
    assert not name & tok.special_ids()
    ok_first = allowed(sk.holes[3][0])  # a required boolean: the options' first tokens only, no "empty"
    assert ok_first == {tok.encode("true", add_bos=False)[0], tok.encode("false", add_bos=False)[0]}


def test_render_canonicalises_and_drops_trailing_empty_items(tiny_engine):
    tok = tiny_engine.tokenizer
    enc = lambda s: tok.encode(s, add_bos=False)  # noqa: E731
    sk = skeleton_for(tiny_engine, PERSON, Widths(string=6, integer=4, number=4))
    ids = fill(sk, [enc("  Ada Lovelace"), enc("0420"), enc("-7.5"), enc("false"), enc("blue"),
                    [], enc("x"), []])
    name = tok.decode(enc("  Ada Lovelace")[:6]).strip()[:10].rstrip()  # 6 tokens, stripped, maxLength 10
    assert name.startswith("Ada")
    # age 420 clamped to 130, score -7.5 to -1.5; the empty first tag is kept (a later one is not empty)
    assert json.loads(render(sk, ids)) == {"name": name, "age": 130, "score": -1.5, "ok": False, "color": "blue",
                                           "tags": ["", "x"]}
    # all slots empty: dropped down to minItems (1); the empty integer is 0, clamped into [0, 130]
    ids = fill(sk, [[], [], [], enc("true"), enc("red"), [], [], []])
    assert json.loads(render(sk, ids)) == {"name": "", "age": 0, "score": 0, "ok": True, "color": "red", "tags": [""]}
    jsonschema.validate(json.loads(render(sk, ids)), PERSON)


# ------------------------------------------------------------------------------------------------ property tests

def schemas(max_depth: int = 2):
    """Random schemas from the supported subset (small, so the engine test stays fast on CPU)."""
    bounds = st.one_of(st.none(), st.integers(-50, 50))
    leaf = st.one_of(
        st.builds(lambda m: {"type": "string"} if m is None else {"type": "string", "maxLength": m},
                  st.one_of(st.none(), st.integers(0, 5))),
        st.tuples(bounds, bounds).map(lambda b: {"type": "integer", **_bounds(*b)}),
        st.tuples(bounds, bounds).map(lambda b: {"type": "number", **_bounds(*b)}),
        st.just({"type": "boolean"}),
        st.lists(st.one_of(st.text("abc1 ", min_size=0, max_size=4), st.integers(-20, 20)), min_size=1,
                 max_size=4, unique_by=json.dumps).map(lambda o: {"enum": o}),
        st.sampled_from(["x", 3, True]).map(lambda c: {"const": c}),
    )

    def extend(children):
        obj = st.dictionaries(st.text("abcdef", min_size=1, max_size=3), children, min_size=1, max_size=3).flatmap(
            lambda props: st.sets(st.sampled_from(sorted(props))).map(
                lambda req: {"type": "object", "properties": props, "required": sorted(req),
                             "additionalProperties": False}))
        arr = st.tuples(children, st.integers(1, 3), st.integers(0, 3)).map(
            lambda t: {"type": "array", "items": t[0], "maxItems": t[1], "minItems": min(t[1], t[2])})
        return st.one_of(obj, arr)

    return st.recursive(leaf, extend, max_leaves=4)


def _bounds(lo, hi):
    out = {}
    if lo is not None:
        out["minimum"] = lo if hi is None else min(lo, hi)
    if hi is not None:
        out["maximum"] = hi if lo is None else max(lo, hi)
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schema=schemas(), seed=st.integers(0, 2**32), from_masks=st.booleans())
def test_any_hole_tokens_render_valid_json(tiny_engine, schema, seed, from_masks):
    """Whatever tokens the holes hold (from their masks, or any token at all), the output validates."""
    sk = skeleton_for(tiny_engine, schema, Widths(string=3, integer=3, number=4))
    rng = random.Random(seed)
    ids = list(sk.known)
    vocab = tiny_engine.config.vocab_size
    for pos, (k, a) in enumerate(zip(sk.known, sk.allowed)):
        if k == FREE:
            choices = sk.masks[a].nonzero().flatten().tolist() if from_masks else range(vocab)
            ids[pos] = rng.choice(choices)
    jsonschema.validate(json.loads(render(sk, ids)), schema)


@pytest.mark.slow
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schema=schemas(), seed=st.integers(0, 2**63 - 1))
def test_engine_outputs_parse_and_validate(tiny_engine, schema, seed):
    """Random schemas x random seeds on the tiny random engine: every row is ok, parses and validates."""
    task = StructuredTask(schema, widths=Widths(string=3, integer=2, number=3))
    plans = [task.plan({"text": "Ada Lovelace, 36, London."}), task.plan({"text": "x"})]
    params = SamplingParams(max_denoising_steps=2)
    results = task.execute(tiny_engine, plans, params, [seed, seed + 1])
    for r in results:
        assert not isinstance(r, RowError), r
        jsonschema.validate(json.loads(r.text), schema)
        assert r.num_passes >= (1 if r.token_ids else 0) and len(r.token_ids) == task.skeleton(tiny_engine).num_free


# ------------------------------------------------------------------------------------------------ the task

def test_task_generates_valid_rows_with_figures(tiny_engine):
    task = build_task(validate_config({"input": {"path": "x"}, "output": {"path": "o"}, "engine": {"checkpoint": "c"},
                                       "task": {"kind": "structured", "schema": PERSON, "string_tokens": 3,
                                                "integer_tokens": 2, "number_tokens": 3}}).task)
    assert type(task) is TASKS["structured"] is StructuredTask
    task = pickle.loads(pickle.dumps(task))  # as Ray ships it to the actors
    prompt = task.prepare("Ada, 36")
    assert prompt == "Extract the fields as JSON.\n\nAda, 36"
    plan = task.plan(Row("r", "Ada, 36"))
    assert plan == PromptPlan(prompt, chat=True)
    results = task.execute(tiny_engine, [plan, plan], SamplingParams(max_denoising_steps=3), [7, 7])
    a, b = results
    assert a.text == b.text  # a row depends only on its inputs and seed
    jsonschema.validate(json.loads(task.render(plan, a)), PERSON)
    sk = task.skeleton(tiny_engine)
    assert len(a.token_ids) == sk.num_free and a.num_passes >= 1
    assert a.tokens_per_pass == pytest.approx(sk.num_free / a.num_passes) and a.seconds > 0
    assert task.describe()["schema"] == PERSON


def test_instruction_placement():
    task = StructuredTask({"type": "string"}, instruction="Text: {text}\nGive the city.")
    assert task.prepare("in Paris") == "Text: in Paris\nGive the city."
    with pytest.raises(ValueError, match="at most once"):
        StructuredTask({"type": "string"}, instruction="{text} {text}")


def test_prompt_that_leaves_no_room_for_the_skeleton_is_an_error_row(tiny_engine):
    task = StructuredTask(PERSON, widths=Widths(string=2, integer=2, number=2))
    limit = tiny_engine.config.max_position_embeddings
    long_text = " ".join(["word"] * limit)
    plans = [PromptPlan(task.prepare(long_text), chat=True), task.plan({"text": "Ada"})]  # past max_input_chars
    results = task.execute(tiny_engine, plans, SamplingParams(max_denoising_steps=1), [0, 1])
    assert isinstance(results[0], RowError) and "plus the JSON skeleton" in results[0].message \
        and f"{limit} positions" in results[0].message
    with pytest.raises(ValueError, match="plus the JSON skeleton"):  # the token check that makes it an error row
        task.count_tokens(tiny_engine, plans[0])
    jsonschema.validate(json.loads(results[1].text), PERSON)


def test_output_failing_validation_becomes_an_error_row(tiny_engine):
    """The jsonschema check is the last line of defence: an output it rejects is an error message, not a row."""
    task = StructuredTask({"type": "object", "properties": {"name": {"type": "string"}}})
    # validation runs against task.schema; a keyword the skeleton does not enforce makes some outputs fail
    task.schema = {"type": "object", "properties": {"name": {"type": "string", "pattern": "^never$"}}}
    [result] = task.execute(tiny_engine, [task.plan({"text": "Ada"})], SamplingParams(max_denoising_steps=1), [0])
    assert isinstance(result, RowError) and \
        result.message.startswith("output does not validate against task.schema at $.name:")


def test_schema_without_holes(tiny_engine):
    task = StructuredTask({"type": "object", "properties": {"v": {"const": 2}, "s": {"type": "string", "maxLength": 0}}})
    [r] = task.execute(tiny_engine, [task.plan({"text": "x"})], SamplingParams(max_denoising_steps=1), [0])
    assert json.loads(r.text) == {"v": 2, "s": ""} and r.token_ids == []


def test_layout_limit():
    big = {"type": "array", "maxItems": 16, "items": {"type": "object", "properties": {
        f"field{i}": {"type": "string"} for i in range(30)}}}
    with pytest.raises(SchemaError, match=r"may take up to 12832 canvas positions .*; at most 4096"):
        StructuredTask(big)


# ------------------------------------------------------------------------------------------------ config

def _cfg(task: dict):
    return validate_config({"input": {"path": "x.jsonl"}, "output": {"path": "o"}, "engine": {"checkpoint": "c"},
                            "task": task})


@pytest.mark.parametrize("task, line", [
    ({"kind": "structured", "schema": {"type": "object", "properties": {"age": {"oneOf": []}}}},
     "task.schema.properties.age: 'oneOf' is not supported; supported: "),
    ({"kind": "structured"}, "task.schema: 'structured' needs task.schema or task.template (exactly one of them)"),
    ({"kind": "structured", "schema": {"type": "string"}, "template": "x"}, "task.schema: 'structured' needs"),
    ({"kind": "structured", "template": {"a": [1, "b"]}}, "task.template.a: all items of a list must have the same"),
    ({"kind": "structured", "schema": "missing.json"}, "task.schema: schema file 'missing.json' not found"),
    ({"kind": "structured", "json_schema": {"type": "string"}}, "task.json_schema: unknown field; did you mean 'schema'?"),
    ({"kind": "generate", "schema": {"type": "string"}}, "task.schema: only used by task.kind 'structured'"),
    ({"kind": "generate", "string_tokens": 4}, "task.string_tokens: only used by task.kind 'structured'"),
    ({"kind": "structured", "schema": {"type": "string"}, "string_tokens": 0}, "task.string_tokens: must be >= 1"),
    ({"kind": "structured", "schema": {"type": "string", "maxLength": 3.5}},
     "task.schema.maxLength: must be an integer >= 0, got 3.5"),
])
def test_config_errors_name_the_field(task, line):
    with pytest.raises(ConfigError) as err:
        _cfg(task)
    assert any(p.startswith(line) for p in err.value.problems), err.value.problems


def test_config_schema_file_and_template(tmp_path, monkeypatch):
    (tmp_path / "person.json").write_text(json.dumps(PERSON))
    monkeypatch.chdir(tmp_path)
    cfg = _cfg({"kind": "structured", "schema": "person.json", "instruction": "Who? {text}"})
    assert cfg.task.json_schema == PERSON  # read at load time: the job fingerprint holds the schema itself
    assert cfg.fingerprint_fields()["task"]["schema"] == PERSON and cfg.redacted()["task"]["schema"] == PERSON
    cfg = _cfg({"kind": "structured", "template": {"name": "Ada", "langs": ["en", "fr"]}})
    task = build_task(cfg.task)
    assert task.schema["properties"]["langs"]["maxItems"] == 2


# ------------------------------------------------------------------------------------------------ whole job

@pytest.mark.slow
@pytest.mark.usefixtures("ray_cluster")
def test_shipped_structured_config_runs(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    from pipelines.cli import main

    monkeypatch.chdir(REPO)  # the config's paths are relative to the repository root
    out = tmp_path / "structured"
    assert main(["run", "configs/structured.yaml", "--set", f"engine.checkpoint={tiny_checkpoint}",
                 "--set", f"output.path={out}", "--set", "sampling.max_denoising_steps=3"]) == 0
    printed = capsys.readouterr().out
    assert "redraft job 'structured-demo': ok" in printed
    inputs = [json.loads(line) for line in open(REPO / "configs" / "structured_texts.jsonl") if line.strip()]
    rows = {r["id"]: r for r in read_output(out)}
    assert sorted(rows) == sorted(r["id"] for r in inputs)
    schema = load_config(REPO / "configs" / "structured.yaml").task.json_schema
    for src in inputs:
        row = rows[src["id"]]
        if not src["text"]:
            assert row["status"] == "error" and row["error"] == "text is empty"
            continue
        assert row["status"] == "ok", row["error"]
        jsonschema.validate(json.loads(row["output"]), schema)
        assert row["num_output_tokens"] > 0 and row["num_passes"] > 0 and row["tokens_per_pass"] > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows_ok"] == len(inputs) - 1


def test_invalid_schema_is_a_config_error_exit_2(tmp_path, capsys, monkeypatch):
    from pipelines.cli import EXIT_CONFIG, main

    monkeypatch.chdir(REPO)
    assert main(["run", "configs/structured.yaml", "--check", "--set",
                 "task.schema.properties.age.format=int32"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "task.schema.properties.age: 'format' is not supported; supported" in err
