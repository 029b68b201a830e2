"""The ``Task`` protocol (``engine/tasks/base.py``): a pure ``plan(row) -> Plan | RowError``, ``execute(engine,
plans, params, seeds) -> list[Result | RowError]``, ``render(plan, result) -> str``, for every task kind; and the
one window driver (``engine/tasks/windows.py``) that rewrite and edit jobs share."""

from __future__ import annotations

import copy
import pickle

import pytest

from engine import SamplingParams
from engine.tasks import (TASKS, EditJob, EditTask, GenerateTask, InfillTask, PromptPlan, Result, RewritePlan,
                          RewriteTask, Row, RowError, StructuredTask)
from engine.tasks.windows import drive_windows

PARAMS = SamplingParams(max_new_tokens=6, max_denoising_steps=2, seed=1)
PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 8}, "age": {"type": "integer"}},
          "required": ["name", "age"]}


def every_kind():
    return {"generate": GenerateTask(), "rewrite": RewriteTask("Fix: {text}"), "infill": InfillTask(fill_tokens=4),
            "edit": EditTask(), "structured": StructuredTask(PERSON)}


def good_row(kind: str) -> Row:
    if kind == "infill":
        return Row("r", None, {"prefix": "def f(x):\n    return ", "suffix": "\n"})
    if kind == "edit":
        return Row("r", "alpha beta gamma", {"spans": [[6, 10]]})
    return Row("r", "Ada Lovelace, 36")


def test_every_registered_kind_is_covered():
    assert set(every_kind()) == set(TASKS)


@pytest.mark.parametrize("kind", sorted(TASKS))
def test_plan_is_pure_and_typed(kind):
    task, row = every_kind()[kind], good_row(kind)
    before = copy.deepcopy(row)
    plan = task.plan(row)  # no engine anywhere: planning needs none
    expected = {"generate": PromptPlan, "structured": PromptPlan, "rewrite": RewritePlan, "infill": EditJob,
                "edit": EditJob}[kind]
    assert type(plan) is expected
    assert task.plan(row) == plan and row == before  # the same plan every time; the row is not touched
    assert pickle.loads(pickle.dumps(plan)) == plan  # plain values


@pytest.mark.parametrize("kind", ["generate", "rewrite", "structured", "edit"])
@pytest.mark.parametrize("text, message", [(None, "text is null"), ("", "text is empty"), ("  \n", "text is empty"),
                                           (7, "text is a int, not a string"),
                                           ("x" * 30, "text has 30 characters; task.max_input_chars is 20")])
def test_bad_text_is_a_row_error_value(kind, text, message):
    task = every_kind()[kind]
    task.max_input_chars = 20
    assert task.plan(Row("r", text, {"spans": [[0, 1]]})) == RowError(message)


def test_kind_specific_problems_are_row_errors():
    kinds = every_kind()
    infill = kinds["infill"].plan(Row("r", None, {"prefix": None, "suffix": "x"}))
    assert infill == RowError("column 'prefix' is null")
    bad_spans = kinds["edit"].plan(Row("r", "abc", {"spans": [[2, 1]]}))
    assert bad_spans == RowError("span 0 [2, 1): reversed (start > end)")
    marker = InfillTask(infill_input="marker").plan(Row("r", "no marker here"))
    assert isinstance(marker, RowError) and "<|fill|>" in marker.message
    assert kinds["generate"].plan(Row("r", "x", error="line is not valid JSON (oops)")) == \
        RowError("line is not valid JSON (oops)")  # a problem found while reading wins
    assert kinds["generate"].plan({"text": "a mapping works too"}) == PromptPlan("a mapping works too")


@pytest.mark.parametrize("kind", sorted(TASKS))
def test_execute_answers_every_plan_in_order_and_render_gives_text(tiny_engine, kind):
    task = every_kind()[kind] if kind != "edit" else EditTask(window_tokens=10**6)  # one hole per span
    task.max_input_chars = 10**6
    good = task.plan(good_row(kind))
    long_text = "x " * (tiny_engine.max_prompt_tokens + 5)  # a prompt, or (edit) a span, past the model's positions
    # infill and rewrite fit long text (context cut to fit, windows): a prompt too long is another row there
    too_long = good if kind in ("infill", "rewrite") else task.plan(Row("r", long_text, {"spans": [[0, len(long_text)]]}))
    bad = RowError("text is null")
    answers = task.execute(tiny_engine, [good, bad, too_long, good], PARAMS, [5, 6, 7, 5])
    assert len(answers) == 4
    assert isinstance(answers[0], Result) and isinstance(answers[3], Result)
    assert answers[1] is bad  # a planning error given to execute stays the row's answer
    if kind not in ("infill", "rewrite"):
        assert isinstance(answers[2], RowError) and "the model" in answers[2].message, answers[2]
    assert answers[0].text == answers[3].text  # the same plan and seed give the same text
    out = task.render(good, answers[0])
    assert isinstance(out, str)


def test_rewrite_whose_window_prompt_cannot_fit_is_a_row_error(tiny_engine):
    task = RewriteTask("x " * (tiny_engine.max_prompt_tokens + 5) + "{text}")
    [answer] = task.execute(tiny_engine, [task.plan(Row("r", "short text"))], PARAMS, [1])
    assert isinstance(answer, RowError) and "the model takes at most" in answer.message


def test_the_one_window_driver_runs_rounds_in_order():
    """Each round, every unfinished run offers its next window (which may depend on its previous answers); one
    call answers the round; runs finish at different rounds."""

    class Counting:
        def __init__(self, name, n):
            self.name, self.n, self.got = name, n, []

        def next_window(self):
            return (self.name, len(self.got), "".join(self.got)) if len(self.got) < self.n else None

        def accept(self, window, result, round_start):
            assert round_start >= 0
            self.got.append(result)

    calls = []

    def call(windows):
        calls.append([w[:2] for w in windows])
        return [f"{name}{i}" for name, i, _ in windows]

    runs = [Counting("a", 3), Counting("b", 1), Counting("c", 0)]
    drive_windows(runs, call)
    assert calls == [[("a", 0), ("b", 0)], [("a", 1)], [("a", 2)]]
    assert runs[0].got == ["a0", "a1", "a2"] and runs[1].got == ["b0"] and runs[2].got == []


def test_rewrite_and_edit_run_through_the_one_driver(tiny_engine, monkeypatch):
    import engine.tasks.editing as editing
    import engine.tasks.rewrite as rewrite

    seen = []

    def spy(runs, call):
        seen.append(type(runs[0]).__name__)
        return drive_windows(runs, call)

    monkeypatch.setattr(rewrite, "drive_windows", spy)
    monkeypatch.setattr(editing, "drive_windows", spy)
    for kind in ("rewrite", "edit", "infill"):
        task = every_kind()[kind]
        [answer] = task.execute(tiny_engine, [task.plan(good_row(kind))], PARAMS, [3])
        assert isinstance(answer, Result)
    assert seen == ["_RewriteRun", "_EditRun", "_EditRun"]


def test_the_old_duck_typed_methods_are_gone():
    for name in ("prepare_row", "prompt_tokens", "generate", "output"):
        assert not any(hasattr(cls, name) for cls in TASKS.values()), name
