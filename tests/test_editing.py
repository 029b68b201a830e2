"""Infill, span edits and long documents: span checks, windows, the infill / edit / rewrite tasks through the worker
with the tiny real engine, their input columns (JSON Lines, Parquet, S3) and whole jobs.

The contract under test: every character outside the spans is identical to the input, for any Unicode text and
any span layout (hypothesis draws both), and an infill's output is the fill only, without padding or EOS."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import SamplingParams
from pipelines.config import ConfigError, TaskConfig, validate_config
from engine.tasks.editing import (assemble, clean_fill, cut_windows, parse_spans, spans_from_markers, split_hole,
                               split_ws)
from pipelines.inputs import InputPlanError, make_shards, plan_inputs, read_schema, read_shard
from pipelines.storage import Location
from pipelines.convert import build_task
from tests.pipeline_fixtures import (make_bucket, ray_cluster, read_output, s3_fs, s3_server,  # noqa: F401
                                     s3_storage, write_jsonl, write_parquet)
from workers.batch import RedraftBatchWorker

REPO = Path(__file__).resolve().parents[1]
FAST = SamplingParams(max_new_tokens=8, max_denoising_steps=1, seed=5)
# any Unicode text (no lone surrogates: they are not characters and cannot be encoded), with plenty of the
# letters, spaces and line ends that real documents are made of
TEXT = st.text(st.one_of(st.characters(blacklist_categories=("Cs",)), st.sampled_from("ab ,.\n\t")), max_size=60)


@st.composite
def doc_and_spans(draw, text=TEXT, max_spans=4):
    """A text and a valid span layout: sorted, non-overlapping, possibly empty, adjacent, at either end."""
    doc = draw(text)
    points = sorted(draw(st.lists(st.integers(0, len(doc)), max_size=2 * max_spans)))
    points = points[:len(points) // 2 * 2]
    return doc, [(points[i], points[i + 1]) for i in range(0, len(points), 2)]


def outside_kept(doc: str, spans, out: str) -> bool:
    """``out`` is ``doc`` with each span replaced by some text: the text between spans appears intact, in order,
    with the first piece at the start and the last at the end."""
    gaps = [doc[a:b] for a, b in zip([0] + [e for _, e in spans], [s for s, _ in spans] + [len(doc)])]
    if len(gaps) == 1:
        return out == doc
    if not out.startswith(gaps[0]) or not out[len(gaps[0]):].endswith(gaps[-1]):
        return False
    pos, end = len(gaps[0]), len(out) - len(gaps[-1])
    for gap in gaps[1:-1]:  # leftmost matching is exact for patterns whose only wildcards are '*'
        found = out.find(gap, pos, end)
        if found < 0:
            return False
        pos = found + len(gap)
    return pos <= end


class Recorder:
    """The real engine, with its calls recorded (prompts, layouts, results) so tests can check what it was given."""

    def __init__(self, engine):
        self._engine = engine
        self.canvas_calls, self.generate_calls = [], []

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def denoise_canvases(self, prompt_ids, known, params, seeds=None, **kw):
        results = self._engine.denoise_canvases(prompt_ids, known, params, seeds=seeds, **kw)
        self.canvas_calls.append((prompt_ids, known, results))
        return results

    def generate(self, prompts, params=None, *, chat=False, seeds=None):
        results = self._engine.generate(prompts, params, chat=chat, seeds=seeds)
        self.generate_calls.append((prompts, chat, results))
        return results


def run_rows(engine, task_cfg: TaskConfig, texts, extras=None, params=FAST) -> list[dict]:
    """Rows through ``RedraftBatchWorker`` (the Ray-facing callable) with the given task; the output rows."""
    task = build_task(task_cfg)
    worker = RedraftBatchWorker("unused", task, params, max_input_chars=task_cfg.char_limit(),
                                engine_loader=lambda *args: engine)
    n = len(texts)
    extras = extras or [{}] * n
    table = pa.table({"__id": [f"r{i}" for i in range(n)], "__text": texts, "__input_error": [None] * n,
                      "__shard": ["part-00000-000000000"] * n, "__row": list(range(n)),
                      "__extra": [json.dumps(x) for x in extras]}, schema=read_schema(("x",)))
    return worker(table).to_pylist()


# ------------------------------------------------------------------------------------------------ span checks

@given(doc_and_spans())
def test_valid_layouts_pass_and_assembly_keeps_the_rest(case):
    doc, spans = case
    assert parse_spans([list(s) for s in spans], len(doc)) == spans
    assert assemble(doc, spans, [doc[s:e] for s, e in spans]) == doc
    new = [f"<{i}>" for i in range(len(spans))]
    out = assemble(doc, spans, new)
    shift = 0
    for (s, e), r in zip(spans, new):  # exact positions: each replacement sits where its span was
        assert out[s + shift:s + shift + len(r)] == r
        shift += len(r) - (e - s)
    assert outside_kept(doc, spans, out)


@pytest.mark.parametrize("spans, message", [
    ([[0, 3], [2, 5]], "span 1 [2, 5): overlaps span 0 [0, 3)"),
    ([[4, 5], [1, 2]], "span 1 [1, 2): starts before span 0 [4, 5); spans must be sorted by start"),
    ([[5, 3]], "span 0 [5, 3): reversed (start > end)"),
    ([[0, 11]], "span 0 [0, 11): out of range for a text of 10 characters"),
    ([[-1, 2]], "span 0 [-1, 2): out of range"),
    ([[1, 2, 3]], "span 0 ([1, 2, 3]): expected a [start, end) pair of integers"),
    ([[1.0, 2]], "span 0 ([1.0, 2]): expected a [start, end) pair of integers"),
    ([[True, 2]], "span 0 ([True, 2]): expected"),
    ([3, 4], "span 0 (3): expected"),
    ("[[1, 2]]", "spans is a str; expected a list of [start, end) pairs"),
    (None, "spans is null"),
])
def test_invalid_spans_name_the_span(spans, message):
    with pytest.raises(ValueError) as err:
        parse_spans(spans, 10)
    assert str(err.value).startswith(message)


@given(doc_and_spans(text=st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="[]"),
                                  max_size=60)))
def test_marked_spans_round_trip(case):
    doc, spans = case
    marked = assemble(doc, spans, [f"[[{doc[s:e]}]]" for s, e in spans])
    assert spans_from_markers(marked, "[[", "]]") == (doc, spans)


@pytest.mark.parametrize("text, message", [
    ("a [[b", "open marker '[[' at character 2 is never closed"),
    ("a ]] b", "close marker ']]' at character 2 has no open marker before it"),
    ("[[a [[b]] c]]", "open marker '[[' at character 4 is inside the span opened at character 0"),
])
def test_marker_errors(text, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        spans_from_markers(text, "[[", "]]")


def test_hole_marker_exactly_once():
    assert split_hole("x = <|fill|>\n", "<|fill|>") == ("x = ", "\n")
    assert split_hole("<|fill|>", "<|fill|>") == ("", "")
    for text, n in (("no hole", 0), ("<|fill|><|fill|>", 2)):
        with pytest.raises(ValueError, match=f"holds the hole marker '<\\|fill\\|>' {n} times"):
            split_hole(text, "<|fill|>")


def test_clean_fill_stops_at_eos_and_drops_padding():
    assert clean_fill([5, 0, 7, 1, 9], eos_ids={1}, skip_ids={0}) == ([5, 7], False)
    assert clean_fill([5, 6], eos_ids={1}, skip_ids={0}) == ([5, 6], True)


# ------------------------------------------------------------------------------------------------ windows

@settings(max_examples=40, deadline=None)
@given(st.text(st.one_of(st.characters(blacklist_categories=("Cs",)), st.sampled_from("ab ,.\n\t")), max_size=400),
       st.integers(4, 40))
def test_windows_partition_the_text(tiny_engine, text, max_tokens):
    count = lambda s: len(tiny_engine.tokenizer.encode(s, add_bos=False))  # noqa: E731
    windows = cut_windows(text, count, max_tokens)
    assert windows[0][0] == 0 and windows[-1][1] == len(text)
    assert all(a < b or len(text) == 0 for a, b in windows)
    assert all(windows[i][1] == windows[i + 1][0] for i in range(len(windows) - 1))
    for a, b in windows:  # pieces are counted apart; merges across their cuts only make a window shorter
        assert count(text[a:b]) <= max_tokens or b - a == 1
    lead, core, trail = split_ws(text)
    assert lead + core + trail == text and core == text.strip()


# ------------------------------------------------------------------------------------------------ edit

def expected_edits(engine: "Recorder", task, cases) -> list[str]:
    """The exact expected output of each case, from the engine's recorded answers: each span's replacement is the
    decoded kept tokens of its own free positions (jobs take part in rounds in order while they have spans left;
    a window's free positions are its spans' budgets, in order)."""
    tok = engine.tokenizer
    budgets = [[task.budget(len(tok.encode(d[s:e], add_bos=False))) for s, e in spans] for d, spans in cases]
    fills: list[list[str]] = [[] for _ in cases]
    skip = tok.special_ids() | {engine.config.pad_token_id}
    for _, known, results in engine.canvas_calls:
        active = [i for i in range(len(cases)) if len(fills[i]) < len(budgets[i])]
        for i, layout, res in zip(active, known, results, strict=True):
            free, offset = layout.count(-1), 0
            while offset < free:
                b = budgets[i][len(fills[i])]
                fills[i].append(tok.decode(clean_fill(res.free_ids[offset:offset + b], set(engine.eos_ids), skip)[0]))
                offset += b
            assert offset == free
    return [assemble(d, spans, f) for (d, spans), f in zip(cases, fills)]


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(doc_and_spans(), min_size=6, max_size=6))
def test_edit_keeps_every_character_outside_the_spans(tiny_engine, cases):
    cases = [(doc if doc.strip() else doc + "x", spans) for doc, spans in cases]  # empty text is an error row
    engine = Recorder(tiny_engine)
    rows = run_rows(engine, TaskConfig(kind="edit"), [d for d, _ in cases],
                    [{"spans": [list(s) for s in spans]} for _, spans in cases])
    for (doc, spans), row, expected in zip(cases, rows, expected_edits(engine, build_task(TaskConfig(kind="edit")),
                                                                       cases)):
        assert row["status"] == "ok", row["error"]
        assert row["output"] == expected and outside_kept(doc, spans, row["output"])
        if not spans:
            assert row["output"] == doc and row["num_passes"] == 0


def test_edit_windows_clamp_both_sides_and_see_the_edited_text_before(tiny_engine):
    engine = Recorder(tiny_engine)
    doc = "".join(f"Line {i}: the value is {i * 7}.\n" for i in range(12))
    spans = [(doc.index(f"{i * 7}."), doc.index(f"{i * 7}.") + len(str(i * 7))) for i in (1, 5, 9)]
    rows = run_rows(engine, TaskConfig(kind="edit", instruction="Double every number."), [doc],
                    [{"spans": [list(s) for s in spans]}])
    assert rows[0]["status"] == "ok" and outside_kept(doc, spans, rows[0]["output"])
    canvas, tok = tiny_engine.canvas_length, tiny_engine.tokenizer
    assert len(engine.canvas_calls) == 3  # one window per span here: each after the edits before it
    head = tok.encode(tiny_engine.apply_chat_template([{"role": "user", "content": "Double every number."}]))
    out, pos = rows[0]["output"], 0
    for k, (prompts, known, _) in enumerate(engine.canvas_calls):
        prompt, layout = prompts[0], known[0]
        assert prompt[:len(head)] == head
        # the context is the end of the already edited text before this span (the gaps here are unique)
        gap = doc[spans[k - 1][1] if k else 0:spans[k][0]]
        pos = out.index(gap, pos) + len(gap)
        context = tok.decode(prompt[len(head):])
        assert context and out[:pos].endswith(context)
        budget = math.ceil(len(tok.encode(doc[slice(*spans[k])], add_bos=False)) * 1.5) + 8
        assert layout[:budget] == [-1] * budget and len(layout) % canvas == 0
        after = tok.encode(doc[spans[k][1]:spans[k][1] + 400], add_bos=False)
        assert layout[budget:] == after[:len(layout) - budget]  # the text after the hole, clamped


def test_edit_error_rows_and_markers(tiny_engine):
    doc = "Hello world, this is fine."
    rows = run_rows(tiny_engine, TaskConfig(kind="edit"), [doc, doc, doc, doc, ""],
                    [{"spans": [[0, 5], [3, 8]]}, {"spans": [[0, 99]]}, {"spans": [[4, 2]]}, {"spans": [["a", 1]]},
                     {"spans": []}])
    assert [r["error"] for r in rows] == [
        "span 1 [3, 8): overlaps span 0 [0, 5)", "span 0 [0, 99): out of range for a text of 26 characters",
        "span 0 [4, 2): reversed (start > end)", "span 0 (['a', 1]): expected a [start, end) pair of integers",
        "text is empty"]
    marked = run_rows(tiny_engine, TaskConfig(kind="edit", span_markers=["{{", "}}"]),
                      ["Dear {{sir}}, thanks{{}}.", "broken {{ marker"])
    assert marked[0]["status"] == "ok" and outside_kept("Dear sir, thanks.", [(5, 8), (16, 16)], marked[0]["output"])
    assert marked[1]["error"] == "open marker '{{' at character 7 is never closed"


# ------------------------------------------------------------------------------------------------ infill

def test_infill_output_is_the_fill_only(tiny_engine):
    engine = Recorder(tiny_engine)
    rows = run_rows(engine, TaskConfig(kind="infill", fill_tokens=12), [None] * 4, [
        {"prefix": "def area(r):\n    ", "suffix": "\n    return a\n"}, {"prefix": "", "suffix": "end"},
        {"prefix": 3, "suffix": "x"}, {"prefix": "x", "suffix": None}])
    assert rows[0]["status"] == rows[1]["status"] == "ok"
    assert rows[2]["error"] == "column 'prefix' is not a string (got int)"
    assert rows[3]["error"] == "column 'suffix' is null"
    prompts, known, results = engine.canvas_calls[0]
    tok = tiny_engine.tokenizer
    assert prompts[0] == tok.encode("def area(r):\n    ")  # BOS + the prefix: causal context
    suffix = tok.encode("\n    return a\n", add_bos=False)
    assert known[0][:12] == [-1] * 12 and known[0][12:12 + len(suffix)] == suffix
    for row, res in zip(rows, results):  # the fill: kept tokens up to the first EOS, decoded on their own
        kept, _ = clean_fill(res.free_ids, set(tiny_engine.eos_ids), tok.special_ids() | {0})
        assert row["output"] == tok.decode(kept) and row["num_output_tokens"] == len(kept) <= 12
    marker = run_rows(tiny_engine, TaskConfig(kind="infill", infill_input="marker", hole_marker="@@"),
                      ["a = @@ + 1", "no hole here", "@@ and @@"])
    assert marker[0]["status"] == "ok"
    assert [r["error"] for r in marker[1:]] == ["text holds the hole marker '@@' 0 times; infill needs it exactly once",
                                                "text holds the hole marker '@@' 2 times; infill needs it exactly once"]


def test_infill_drops_unused_budget(checkpoint_factory):
    import torch

    from engine import DiffusionEngine

    path, _ = checkpoint_factory("base", eos_scale=3.0)  # EOS is likely: fills end before their budget
    engine = DiffusionEngine.from_pretrained(path, device="cpu", dtype=torch.float32)
    rows = run_rows(engine, TaskConfig(kind="infill", fill_tokens=16), [None] * 6,
                    [{"prefix": f"def f{i}(x):\n    ", "suffix": "\n    return y\n"} for i in range(6)],
                    params=SamplingParams(max_denoising_steps=2, seed=1))
    assert all(r["status"] == "ok" for r in rows)
    assert any(r["num_output_tokens"] < 16 for r in rows)
    specials = {engine.tokenizer.decode([i], skip_special_tokens=False) for i in engine.tokenizer.special_ids()}
    assert not any(s in r["output"] for r in rows for s in specials)


# ------------------------------------------------------------------------------------------------ long documents

def long_document(chars: int) -> str:
    """Real text ``chars`` characters long: Python standard library source (what the tiny tokenizer was trained on,
    so it takes few tokens) with a line of non-ASCII text every few thousand characters."""
    from benchmarks.checkpoints import training_text

    code = "".join(training_text(chars + 10_000))
    lines, out, size = code.splitlines(keepends=True), [], 0
    for i, line in enumerate(lines):
        out.append(line if i % 80 else "# Größe — naïve café «ok» 🙂 ¿sí? 東京\n")
        size += len(out[-1])
        if size >= chars:
            break
    return "".join(out)[:chars]


@pytest.fixture(scope="module")
def wide_vocab_engine(checkpoint_factory):
    """The base model with a 4096-token vocabulary: long documents take about a quarter of the base's tokens."""
    import torch

    from engine import DiffusionEngine

    path, _ = checkpoint_factory("base", vocab_size=4096)
    return DiffusionEngine.from_pretrained(path, device="cpu", dtype=torch.float32)


@pytest.mark.slow
def test_100k_character_edit_keeps_the_contract(wide_vocab_engine):
    doc = long_document(100_000)
    spans = [(s, s + 11) for s in range(500, 99_000, 5_000)] + [(99_500, 99_500), (99_990, 100_000)]
    spans[3] = (spans[3][0], spans[3][0] + 400)  # one span longer than a window: rewritten piece by piece
    engine = Recorder(wide_vocab_engine)
    rows = run_rows(engine, TaskConfig(kind="edit", window_tokens=32, context_tokens=64), [doc],
                    [{"spans": [list(s) for s in spans]}])
    assert rows[0]["status"] == "ok", rows[0]["error"]
    assert outside_kept(doc, spans, rows[0]["output"])
    assert len(engine.canvas_calls) > len(spans)  # the long span took several windows
    limit = wide_vocab_engine.config.max_position_embeddings
    for prompts, known, _ in engine.canvas_calls:
        assert len(prompts[0]) <= 1 + 64 and len(prompts[0]) + len(known[0]) <= limit


@pytest.mark.slow
def test_100k_character_rewrite_goes_window_by_window(wide_vocab_engine):
    doc, engine = long_document(100_000), Recorder(wide_vocab_engine)
    cfg = TaskConfig(kind="rewrite", instruction="Rewrite:\n{text}", window_tokens=2048, context_tokens=64)
    rows = run_rows(engine, cfg, [doc], params=SamplingParams(max_new_tokens=4, max_denoising_steps=1, seed=2))
    assert rows[0]["status"] == "ok", rows[0]["error"]
    task = build_task(cfg)
    windows = task.windows(wide_vocab_engine, task.plan({"text": doc}))
    assert len(windows) > 5 and len(engine.generate_calls) == len(windows)
    expected = []
    for (a, b), (prompts, chat, results) in zip(windows, engine.generate_calls):
        lead, core, trail = split_ws(doc[a:b])
        assert core in prompts[0] and chat == (a == 0)  # later windows carry the text before as a first exchange
        assert len(wide_vocab_engine.tokenizer.encode(prompts[0])) <= wide_vocab_engine.max_prompt_tokens
        expected += [lead, results[0].text.strip(), trail]
    assert rows[0]["output"] == "".join(expected).strip()  # joined exactly: each window's own whitespace kept
    assert rows[0]["num_passes"] == sum(c[2][0].num_passes for c in engine.generate_calls)


def test_short_rewrite_is_one_call_as_before(tiny_engine):
    engine = Recorder(tiny_engine)
    rows = run_rows(engine, TaskConfig(kind="rewrite", instruction="Fix: {text}"), ["  a short one  "])
    (prompts, chat, results), = engine.generate_calls
    assert prompts == ["Fix:   a short one  "] and chat
    assert rows[0]["output"] == results[0].text.strip()
    assert results[0].num_passes == rows[0]["num_passes"]


# ------------------------------------------------------------------------------------------------ inputs

def test_extra_columns_from_jsonl_and_parquet(tmp_path):
    cfg = validate_config({"input": {"path": str(tmp_path / "in"), "id_column": "id"}, "output": {"path": "o"},
                           "engine": {"checkpoint": "c"}, "task": {"kind": "edit"}}).input
    write_jsonl(tmp_path / "in" / "a.jsonl", [
        {"id": "j0", "text": "abc", "spans": [[0, 1]]}, {"id": "j1", "text": "abc"},
        {"id": "j2", "text": "héllo", "spans": "nope"}])
    write_parquet(tmp_path / "in" / "b.parquet", {
        "id": ["p0", "p1"], "text": ["xyz", "uvw"],
        "spans": pa.array([[[0, 2]], None], type=pa.list_(pa.list_(pa.int64()))),
        "blob": pa.array([b"\x00", b"\x01"])})
    loc = Location.of(str(tmp_path / "in"), cfg.storage)
    files = plan_inputs(loc, cfg, 10, columns={"task.spans_column": "spans"})
    rows = [r for s in make_shards(files, 10) for r in read_shard(loc, s, cfg, frozenset(), 10, ("spans",)).to_pylist()]
    by_id = {r["__id"]: r for r in rows}
    assert json.loads(by_id["j0"]["__extra"]) == {"spans": [[0, 1]]} and by_id["j0"]["__input_error"] is None
    assert by_id["j1"]["__input_error"] == "row has no field 'spans'"
    assert json.loads(by_id["j2"]["__extra"]) == {"spans": "nope"}  # the task names the wrong type
    assert json.loads(by_id["p0"]["__extra"]) == {"spans": [[0, 2]]} and json.loads(by_id["p1"]["__extra"]) == {
        "spans": None}
    # a column JSON cannot carry is an error row naming it; a missing column fails the plan, naming the field
    blob = make_shards([f for f in files if f.format == "parquet"], 10)[0]
    got = read_shard(loc, blob, cfg, frozenset(), 10, ("blob",)).to_pylist()
    assert got[0]["__input_error"] == "column 'blob' holds a bytes value, not text, a number or a list"
    with pytest.raises(InputPlanError, match="task.prefix_column: column 'prefix' is not in"):
        plan_inputs(loc, cfg, 10, columns={"task.prefix_column": "prefix"})
    # infill from columns does not need the text column
    write_jsonl(tmp_path / "fill.jsonl", [{"id": "f0", "prefix": "a", "suffix": "b"}])
    floc = Location.of(str(tmp_path / "fill.jsonl"), cfg.storage)
    cols = {"task.prefix_column": "prefix", "task.suffix_column": "suffix"}
    ffiles = plan_inputs(floc, cfg, 10, columns=cols, read_text=False)
    row = read_shard(floc, make_shards(ffiles, 10)[0], cfg, frozenset(), 10, ("prefix", "suffix"), False).to_pylist()[0]
    assert row["__text"] is None and row["__input_error"] is None and json.loads(row["__extra"]) == {
        "prefix": "a", "suffix": "b"}
    with pytest.raises(InputPlanError, match="input.text_column: no field 'text'"):
        plan_inputs(floc, cfg, 10, columns=cols)


def test_task_config_fields_belong_to_their_kind():
    base = {"input": {"path": "x"}, "output": {"path": "y"}, "engine": {"checkpoint": "c"}}
    for task, message in [
        ({"kind": "generate", "fill_tokens": 3}, "task.fill_tokens: only used by task.kind 'infill'"),
        ({"kind": "infill", "spans_column": "s"}, "task.spans_column: only used by task.kind 'edit'"),
        ({"kind": "edit", "span_markers": ["[[", "["]}, "task.span_markers: must be [open, close]"),
        ({"kind": "edit", "instruction": "  "}, "task.instruction: must not be empty"),
        ({"kind": "generate", "window_tokens": 64}, "task.window_tokens: only used by task.kind 'rewrite' or 'edit'"),
    ]:
        with pytest.raises(ConfigError) as err:
            validate_config({**base, "task": task})
        assert str(err.value).startswith(message), str(err.value)
    assert TaskConfig(kind="edit").char_limit() == 1_000_000 and TaskConfig().char_limit() == 20_000
    assert TaskConfig(kind="edit", max_input_chars=5).char_limit() == 5


def test_extra_columns_from_s3(s3_server):
    import pyarrow.parquet as pq

    fs = s3_fs(s3_server)
    make_bucket(s3_server, "infill-in")
    buf = io.BytesIO()
    pq.write_table(pa.table({"id": ["s0", "s1"], "prefix": ["def f():\n    ", "x = "], "suffix": ["\n", None]}), buf)
    with fs.open_output_stream("infill-in/rows.parquet") as out:
        out.write(buf.getvalue())
    cfg = validate_config({"input": {"path": "s3://infill-in/", "id_column": "id", "storage": s3_storage(s3_server)},
                           "output": {"path": "o"}, "engine": {"checkpoint": "c"}, "task": {"kind": "infill"}}).input
    loc = Location.of(cfg.path, cfg.storage)
    files = plan_inputs(loc, cfg, 10, columns={"task.prefix_column": "prefix", "task.suffix_column": "suffix"},
                        read_text=False)
    rows = read_shard(loc, make_shards(files, 10)[0], cfg, frozenset(), 10, ("prefix", "suffix"), False).to_pylist()
    assert [json.loads(r["__extra"]) for r in rows] == [{"prefix": "def f():\n    ", "suffix": "\n"},
                                                        {"prefix": "x = ", "suffix": None}]


@pytest.mark.slow
def test_example_configs_run_as_jobs(ray_cluster, tiny_checkpoint, tmp_path):
    from pipelines.config import load_config
    from pipelines.run import format_summary, run_job

    def run(name):
        cfg = load_config(REPO / "configs" / f"{name}.yaml", [
            f"input.path={REPO / 'configs' / f'{name}.jsonl'}", f"output.path={tmp_path / name}",
            f"engine.checkpoint={tiny_checkpoint}", "sampling.max_denoising_steps=2"])
        result = run_job(cfg)
        assert result.exit_code == 0, result.message
        inputs = [json.loads(line) for line in (REPO / "configs" / f"{name}.jsonl").read_text().splitlines()]
        rows = read_output(tmp_path / name)
        assert [r["id"] for r in rows] == [r["id"] for r in inputs]  # one row per input, in order
        summary = result.summary
        assert summary["task"] == cfg.task.kind and summary["mean_seconds_per_row"] > 0
        assert summary["mean_tokens_per_pass"] > 0 and "mean seconds / row" in format_summary(summary)
        return cfg, inputs, rows

    cfg, inputs, rows = run("code_infill")
    assert all(r["status"] == "ok" and 0 <= r["num_output_tokens"] <= cfg.task.fill_tokens for r in rows)
    cfg, inputs, rows = run("doc_edit")
    errors = {r["id"]: r["error"] for r in rows if r["status"] == "error"}
    assert errors == {"bad-spans": "span 1 [10, 20): overlaps span 0 [5, 12)",
                      "out-of-range": "span 0 [2, 40): out of range for a text of 6 characters"}
    for row, given in zip(rows, inputs):
        if row["status"] == "ok":
            assert outside_kept(given["text"], [tuple(s) for s in given["spans"]], row["output"])
