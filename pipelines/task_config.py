"""The ``task`` section of the job config (re-exported by ``pipelines.config``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from .config_base import _Model


# which task kinds read each editing setting of TaskConfig
_TASK_FIELD_KINDS = {
    **dict.fromkeys(["infill_input", "prefix_column", "suffix_column", "hole_marker", "fill_tokens"], ("infill",)),
    **dict.fromkeys(["spans_column", "span_markers", "edit_token_ratio", "edit_extra_tokens", "insert_tokens"],
                    ("edit",)),
    "context_tokens": ("rewrite", "edit", "infill"), "window_tokens": ("rewrite", "edit"),
    **dict.fromkeys(["json_schema", "template", "string_tokens", "integer_tokens", "number_tokens"], ("structured",)),
}


class TaskConfig(_Model):
    model_config = ConfigDict(serialize_by_alias=True)  # dumps (summary, fingerprint) say 'schema', as the YAML does
    kind: Literal["generate", "rewrite", "infill", "edit", "structured"] = Field(
        default="generate", description="'generate': the text is a prompt and the output continues it. "
        "'rewrite': the instruction (with the text in place of {text}) goes through the checkpoint's chat "
        "template and the output replaces the document. 'infill': fill the hole between a prefix and a suffix. "
        "'edit': rewrite only the given spans of the document. 'structured': JSON that follows task.schema.")
    instruction: str | None = Field(
        default=None, validate_default=True, description="Rewrite instruction; '{text}' marks where the "
        "document goes. Required for 'rewrite'. Optional for 'edit' and 'infill': sent as a user turn through the "
        "chat template, and the edited document (or prefix, fill, suffix) follows as the model's reply. Optional "
        "for 'structured': the user turn before the text (default 'Extract the fields as JSON.'); a '{text}' in "
        "it marks where the text goes instead.")
    max_input_chars: int | None = Field(
        default=None, ge=1, description="Rows whose text is longer than this become error rows (infill from "
        "columns: prefix and suffix together). Default: 20000 for 'generate' and 'structured'; 1000000 for "
        "'rewrite', 'infill' and 'edit', which cut long documents into windows.")
    context_tokens: int = Field(
        default=1024, ge=0, description="Long documents ('rewrite', 'edit', 'infill'): tokens of the text "
        "before a window (already rewritten or edited) given to the model as context, at most.")
    window_tokens: int = Field(
        default=256, ge=8, description="Long documents: 'rewrite' cuts documents longer than this many tokens "
        "into windows of at most this size (at line ends where possible) and rewrites them one by one; 'edit' "
        "rewrites a span longer than this piece by piece. 256 is DiffusionGemma's canvas.")
    infill_input: Literal["columns", "marker"] = Field(
        default="columns", description="'infill': 'columns' reads task.prefix_column and task.suffix_column; "
        "'marker' reads the text column, which must hold task.hole_marker exactly once.")
    prefix_column: str = Field(default="prefix", min_length=1, description="'infill': column with the text "
                               "before the hole.")
    suffix_column: str = Field(default="suffix", min_length=1, description="'infill': column with the text "
                               "after the hole.")
    hole_marker: str = Field(default="<|fill|>", min_length=1, description="'infill' with infill_input "
                             "'marker': the string that marks the hole in the text.")
    fill_tokens: int = Field(default=64, ge=1, le=100_000, description="'infill': token budget of the fill; "
                             "positions the model leaves unused (end-of-sequence, padding) are dropped.")
    spans_column: str = Field(default="spans", min_length=1, description="'edit': column holding a list of "
                              "[start, end) character offsets (Python string indices) of the spans to rewrite.")
    span_markers: list[str] | None = Field(
        default=None, description="'edit': [open, close] marker strings, e.g. ['[[', ']]']: spans are marked "
        "in the text instead of a spans column; the markers are removed from the output.")
    edit_token_ratio: float = Field(default=1.5, gt=0, le=100, description="'edit': a span's token budget "
                                    "is its own token count times this, plus task.edit_extra_tokens.")
    edit_extra_tokens: int = Field(default=8, ge=0, description="'edit': tokens added to every span's budget.")
    insert_tokens: int = Field(default=16, ge=1, description="'edit': token budget of an empty span (an "
                               "insertion point).")
    # 'schema' in YAML; the attribute has another name because pydantic's BaseModel has a 'schema' method
    json_schema: dict | str | None = Field(
        default=None, alias="schema", description="'structured': the JSON Schema every output follows (the "
        "subset the README lists: objects, strings, integers, numbers, booleans, enums, arrays with maxItems): a "
        "mapping inline, or the path of a .json file, read when the config is loaded (relative paths from the "
        "current directory). Give this or task.template.")
    template: Any = Field(
        default=None, description="'structured': an example JSON document instead of a schema: objects keep "
        "their keys, leaf values give the types (string, integer, number, boolean), a list of N items gives an "
        "array of up to N items like its first.")
    string_tokens: int = Field(default=12, ge=1, le=256, description="'structured': canvas positions of a "
                               "string value (a string's maxLength, when lower, is used instead).")
    integer_tokens: int = Field(default=6, ge=1, le=32, description="'structured': canvas positions of an "
                                "integer value.")
    number_tokens: int = Field(default=8, ge=1, le=32, description="'structured': canvas positions of a "
                               "number value.")

    @field_validator("json_schema")
    @classmethod
    def _load_schema_file(cls, value):
        """A path is read here, so the job's fingerprint holds the schema itself (a changed file is a new job)."""
        if isinstance(value, str):
            from engine.tasks.schema_subset import load_schema_file

            return load_schema_file(value)
        return value

    @model_validator(mode="after")
    def _structured_schema(self):
        """'structured' needs a schema (or template) inside the supported subset; errors name its JSON path."""
        if self.kind != "structured":
            return self
        if (self.json_schema is None) == (self.template is None):
            raise ValueError(".schema: 'structured' needs task.schema or task.template (exactly one of them)")
        from engine.tasks import SchemaError

        from .convert import structured_task

        field = ".schema" if self.json_schema is not None else ".template"
        try:
            structured_task(self)
        except SchemaError as err:
            raise ValueError(err.at(field)) from None
        return self

    @field_validator("instruction")
    @classmethod
    def _instruction_fits_kind(cls, value, info):
        kind = info.data.get("kind")
        if kind == "rewrite":
            if not value or not value.strip():
                raise ValueError("required when task.kind is 'rewrite'")
            if value.count("{text}") != 1:
                raise ValueError("must contain '{text}' exactly once (where the document goes)")
        elif kind in ("edit", "infill", "structured"):
            if value is not None and not value.strip():
                raise ValueError("must not be empty (leave it out for no instruction)")
            if kind == "structured" and value is not None and value.count("{text}") > 1:
                raise ValueError("may contain '{text}' at most once (where the text goes; else it follows)")
        elif value is not None and kind is not None:
            raise ValueError(f"only used by task.kind 'rewrite', 'edit', 'infill' or 'structured' (task.kind is "
                             f"{kind!r}); remove it")
        return value

    @field_validator("context_tokens", "window_tokens", "infill_input", "prefix_column", "suffix_column",
                     "hole_marker", "fill_tokens", "spans_column", "span_markers", "edit_token_ratio",
                     "edit_extra_tokens", "insert_tokens", "json_schema", "template", "string_tokens",
                     "integer_tokens", "number_tokens")
    @classmethod
    def _used_by_kind(cls, value, info):
        """Editing settings given for a kind that ignores them are a likely mistake (runs on given values only)."""
        kind = info.data.get("kind")
        kinds = _TASK_FIELD_KINDS[info.field_name]
        if kind is not None and kind not in kinds:
            raise ValueError(f"only used by task.kind {' or '.join(map(repr, kinds))} (task.kind is {kind!r}); "
                             "remove it")
        if info.field_name == "span_markers" and value is not None and (
                len(value) != 2 or not all(value) or value[0] in value[1] or value[1] in value[0]):
            raise ValueError(f"must be [open, close]: two non-empty strings, neither inside the other (got {value!r})")
        return value

    def char_limit(self) -> int:
        """``max_input_chars``, or its default for this kind."""
        if self.max_input_chars is not None:
            return self.max_input_chars
        return 1_000_000 if self.kind in ("rewrite", "edit", "infill") else 20_000
