"""The one place where validated config becomes engine objects: the task, the sampling parameters and a Serve
replica's settings.

``pipelines/config.py`` and ``pipelines/serve_config.py`` validate (field names in every error); this module
builds. Nothing else turns a ``TaskConfig`` into a task, a ``SamplingConfig`` into ``SamplingParams`` or a
``ServeConfig`` into ``ServeSettings``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from engine.sampling.params import SamplingParams
from engine.tasks import TASKS, EditTask, GenerateTask, InfillTask, RewriteTask, StructuredTask, Task, Widths
from engine.tasks.schema_subset import schema_from_template

from workers.serve_settings import ServeSettings

if TYPE_CHECKING:
    from .config import JobConfig, SamplingConfig, TaskConfig
    from .serve_config import ServeConfig


def build_task(cfg: "TaskConfig") -> Task:
    """The task for ``cfg.kind``; ``ValueError`` naming ``task.kind`` for an unknown kind."""
    builders = {"generate": lambda c: GenerateTask(), "rewrite": _rewrite, "infill": _infill, "edit": _edit,
                "structured": structured_task}
    if cfg.kind not in TASKS or cfg.kind not in builders:
        raise ValueError(f"task.kind: unknown kind {cfg.kind!r}; known: {', '.join(sorted(TASKS))}")
    task = builders[cfg.kind](cfg)
    task.max_input_chars = cfg.char_limit()  # longer text is an error row (task.max_input_chars)
    return task


def _rewrite(cfg: "TaskConfig") -> RewriteTask:
    return RewriteTask(cfg.instruction or "", cfg.window_tokens, cfg.context_tokens)


def _infill(cfg: "TaskConfig") -> InfillTask:
    return InfillTask(cfg.infill_input, cfg.prefix_column, cfg.suffix_column, cfg.hole_marker, cfg.fill_tokens,
                      cfg.instruction, cfg.context_tokens, cfg.char_limit())


def _edit(cfg: "TaskConfig") -> EditTask:
    return EditTask(cfg.spans_column, cfg.span_markers, cfg.instruction, cfg.edit_token_ratio, cfg.edit_extra_tokens,
                    cfg.insert_tokens, cfg.window_tokens, cfg.context_tokens)


def structured_task(cfg: "TaskConfig") -> StructuredTask:
    """Raises ``SchemaError`` (with the JSON path) for a schema or template outside the supported subset."""
    schema = cfg.json_schema if cfg.json_schema is not None else schema_from_template(cfg.template)
    return StructuredTask(schema, cfg.instruction, Widths(cfg.string_tokens, cfg.integer_tokens, cfg.number_tokens))


def vllm_sampling(cfg: "JobConfig"):
    """The vLLM backend's sampling settings for a job (``workers.vllm_worker.VLLMSampling``)."""
    from workers.vllm_worker import vllm_sampling as build

    return build(cfg.engine.checkpoint, cfg.sampling.max_new_tokens, cfg.engine.vllm.temperature,
                 cfg.engine.vllm.top_p, cfg.sampling.ignore_eos, cfg.sampling.seed)


def vllm_stage_settings(cfg: "JobConfig"):
    """The vLLM stages' settings for a job (``workers.vllm_worker.VLLMStageSettings``)."""
    from workers.vllm_worker import VLLMStageSettings

    v = cfg.engine.vllm
    return VLLMStageSettings(
        checkpoint=str(Path(cfg.engine.checkpoint).expanduser().resolve()), dtype=cfg.engine.dtype,
        max_model_len=v.max_model_len, engine_kwargs=dict(v.engine_kwargs), max_num_seqs=v.max_num_seqs,
        cpu_kv_cache_gib=v.cpu_kv_cache_gib, batch_size=cfg.workers.batch_size, max_input_chars=cfg.task.char_limit(),
        job_name=cfg.job.name)


def sampling_params(cfg: "SamplingConfig") -> SamplingParams:
    """The engine's sampling parameters for a validated sampling section (job or Serve)."""
    return SamplingParams(**cfg.model_dump())


def serve_settings(cfg: "ServeConfig") -> ServeSettings:
    """A replica's settings; the checkpoint path made absolute here, where ``redraft serve`` runs."""
    eng, dep = cfg.engine, cfg.deployment
    return ServeSettings(
        checkpoint=str(Path(eng.checkpoint).resolve()), device=eng.device, dtype=eng.dtype,
        quantization=eng.quantization, batch_invariant=eng.batch_invariant,
        num_threads=max(1, int(dep.num_cpus)) if dep.num_gpus == 0 else None,
        model_name=cfg.model_name, sampling=sampling_params(cfg.sampling),
        max_tokens_limit=cfg.http.max_tokens_limit, max_body_bytes=cfg.http.max_body_bytes,
        max_prompts_per_request=cfg.http.max_prompts_per_request, max_request_tokens=cfg.http.max_request_tokens,
        max_batch_size=dep.max_batch_size, batch_wait_timeout_s=dep.batch_wait_timeout_s)
