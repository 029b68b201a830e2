"""The vLLM backend of ``redraft run``: an autoregressive model served by vLLM inside the same Ray Data job.

The engine stage is Ray's own vLLM processor (``ray.data.llm.vLLMEngineProcessorConfig`` + ``build_processor``),
wrapped so that everything around it stays the diffusion backend's: the same row checks and error messages,
the same per-row seeds, the same ``OUTPUT_SCHEMA`` rows, metrics, staging, resume and summary.

Stages (all Ray Data; ``vllm`` is imported only inside the engine actors)::

    rows (__id, __text, __input_error, __shard, __row)
      -> preprocess (Ray's Dataset.map): the diffusion backend's row checks, chat template for 'rewrite', token
         ids, per-row vLLM sampling params; a bad row gets Ray's ``__inference_error__`` so it bypasses the engine
      -> Ray's vLLM engine stage (one vllm.AsyncLLMEngine per actor; a row whose generation raises becomes
         ``__inference_error__`` too, because ``should_continue_on_error`` is on)
      -> ``VLLMOutputAssembler`` (map_batches): OUTPUT_SCHEMA + __shard/__row, metrics

Per-row figures: an autoregressive model spends one forward pass per generated token, so ``num_passes`` is
the number of generated tokens and ``tokens_per_pass`` is 1.0; ``seconds`` is the row's time inside vLLM.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa

from engine.tasks import Row, RowError
from engine.tasks.seeds import row_seed
from workers.rows import output_table, row_of

# Tokens that end a chat turn in common templates; generation stops at them as it stops at EOS (as redraft's
# engine does for its own templates).
END_OF_TURN_TOKENS = ("<end_of_turn>", "<turn|>", "<|eot_id|>", "<|im_end|>", "<|end|>")


@dataclass(frozen=True)
class VLLMSampling:
    """The job's sampling settings as vLLM takes them; ``digest()`` is the rows' ``sampling_hash``.

    Mapping from the job config: ``sampling.max_new_tokens`` -> ``max_tokens``, ``sampling.ignore_eos`` and
    ``sampling.seed`` (each row's vLLM seed derives from it and the row id, as in redraft), ``engine.vllm.
    temperature`` / ``top_p``. The denoising settings (steps, entropy bound, t_max / t_min, thresholds,
    fixed_steps) have no meaning for an autoregressive model and are ignored.
    """

    max_tokens: int
    temperature: float
    top_p: float
    ignore_eos: bool
    seed: int
    stop_token_ids: tuple[int, ...] = field(default=())

    def to_dict(self) -> dict:
        return {"backend": "vllm", **asdict(self), "stop_token_ids": list(self.stop_token_ids)}

    def digest(self) -> str:
        """Short stable hash of the parameters (for output rows and the summary)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def for_row(self, row_id: str) -> dict:
        """``vllm.SamplingParams`` keyword arguments for one row (its own seed: output independent of batching)."""
        return {"max_tokens": self.max_tokens, "temperature": self.temperature, "top_p": self.top_p,
                "ignore_eos": self.ignore_eos, "seed": row_seed(self.seed, row_id),
                "stop_token_ids": [] if self.ignore_eos else list(self.stop_token_ids), "skip_special_tokens": True}


def read_model_config(checkpoint: str | Path) -> dict:
    """The checkpoint's ``config.json`` (raises ``ValueError`` naming the file when it is missing or broken)."""
    path = Path(checkpoint) / "config.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: not found (a Hugging Face checkpoint needs config.json)") from None
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not readable JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def model_max_len(checkpoint: str | Path, configured: int | None) -> int:
    """The context length vLLM runs with: ``engine.vllm.max_model_len``, else the checkpoint's
    ``max_position_embeddings`` (top level or ``text_config``)."""
    if configured is not None:
        return configured
    cfg = read_model_config(checkpoint)
    for source in (cfg, cfg.get("text_config") or {}):
        value = source.get("max_position_embeddings")
        if isinstance(value, int) and value > 0:
            return value
    raise ValueError(f"{Path(checkpoint) / 'config.json'}: no max_position_embeddings; set engine.vllm.max_model_len")


def check_vllm_installed() -> str:
    """vLLM's version, or ``ImportError`` with the install hint (the ``vllm`` extra is optional)."""
    try:
        import vllm
    except ImportError as err:
        raise ImportError(f"engine.backend 'vllm' needs vLLM, which is not installed ({err}); install the extra: "
                          "pip install 'redraft[vllm]'") from None
    return str(getattr(vllm, "__version__", "unknown"))


@functools.lru_cache(maxsize=4)
def _tokenizer(checkpoint: str):
    """One tokenizer per worker process and checkpoint (Ray reuses task workers, so this loads once)."""
    from engine.tokenizer import Tokenizer

    return Tokenizer(checkpoint)


class VLLMRowPreparer:
    """Ray's preprocess function: one input row -> the vLLM request fields, or ``__inference_error__``.

    The row is planned by the task (``task.plan``: the diffusion backend's row checks and messages). The prompt is
    the plan's single-prompt form (``task.whole_prompt``): the text ('generate') or the instruction with the text
    in it through the checkpoint's chat template ('rewrite': the whole document in one prompt; an autoregressive
    model has no canvas to window). It is tokenized here with the checkpoint's ``tokenizer.json`` (the ids
    redraft's engine would see, BOS once) and handed to vLLM as ids, so its length is checked against the
    context before any engine time is spent.
    """

    def __init__(self, checkpoint: str, task, sampling: VLLMSampling, max_input_chars: int, max_prompt_tokens: int):
        if max_input_chars != task.max_input_chars:
            task = copy.copy(task)
            task.max_input_chars = max_input_chars
        self.checkpoint, self.task, self.sampling = checkpoint, task, sampling
        self.max_input_chars, self.max_prompt_tokens = max_input_chars, max_prompt_tokens

    def _prompt_ids(self, plan) -> list[int] | RowError:
        tok = _tokenizer(self.checkpoint)
        try:
            prompt, chat = self.task.whole_prompt(plan)
            if chat:
                prompt = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True)
            ids = tok.encode(prompt)
        except Exception as err:  # noqa: BLE001 - a tokenizer or template failure is this row's problem
            return RowError(f"cannot tokenize the prompt: {type(err).__name__}: {err}")
        if len(ids) > self.max_prompt_tokens:
            return RowError(f"prompt has {len(ids)} tokens; the model takes at most {self.max_prompt_tokens}")
        return ids

    def __call__(self, row: dict) -> dict:
        plan = self.task.plan(row_of(row))
        ids = plan if isinstance(plan, RowError) else self._prompt_ids(plan)
        if isinstance(ids, RowError):  # Ray's processor passes rows with __inference_error__ around its engine stage
            # every key filled as for a good row: a null sampling_params in a block turns the others' integer
            # seeds into floats on the way to the engine stage, which vLLM rejects ("Expected int, got float")
            return {"tokenized_prompt": [], "sampling_params": self.sampling.for_row(str(row["__id"])),
                    "__row_error": ids.message, "__inference_error__": ids.message}
        # '' (not left out): Ray treats a row whose __inference_error__ is anything but '' as failed, and a block
        # that mixes good and bad rows fills a left-out key with None
        return {"tokenized_prompt": ids, "sampling_params": self.sampling.for_row(str(row["__id"])),
                "__row_error": None, "__inference_error__": ""}


@dataclass
class VLLMAnswer:
    """One generated row, shaped like the engine's ``GenerationResult`` where the task and the metrics read it."""

    text: str
    token_ids: list[int]
    seconds: float
    num_canvases: int = 0  # no canvases: the canvas-latency histogram is left to the diffusion backend

    @property
    def num_passes(self) -> int:
        return len(self.token_ids)  # one forward pass per generated token

    @property
    def tokens_per_pass(self) -> float:
        return 1.0 if self.token_ids else 0.0


class VLLMOutputAssembler:
    """After Ray's vLLM stage: every row (answered, failed in vLLM, or refused before it) becomes one
    ``OUTPUT_SCHEMA`` row plus ``__shard`` / ``__row``; the row figures go to redraft's Ray metrics."""

    def __init__(self, checkpoint: str, task, sampling: VLLMSampling, job_name: str = ""):
        self.task, self.sampling_hash, self.job_name = task, sampling.digest(), job_name
        self.model = Path(checkpoint).name

    def _answer(self, row_error, inference_error, text, tokens, seconds):
        """A ``VLLMAnswer``, or the row's ``RowError``."""
        if row_error:
            return RowError(row_error)
        if inference_error:
            return RowError(f"generation failed: {inference_error}")
        if text is None or tokens is None:
            return RowError("generation failed: vLLM returned no output for this row")
        return VLLMAnswer(text, list(tokens), float(seconds or 0.0))

    def __call__(self, batch: pa.Table) -> pa.Table:
        from workers.metrics import metric_tags, record_generation

        n = batch.num_rows
        get = lambda name: batch.column(name).to_pylist() if name in batch.column_names else [None] * n  # noqa: E731
        answers = [self._answer(*r) for r in zip(get("__row_error"), get("__inference_error__"),
                                                  get("generated_text"), get("generated_tokens"),
                                                  get("time_taken_llm"))]
        ids = [str(i) for i in get("__id")]
        # a plan is pure, so the row is planned again here (an answered row planned fine in the preparer)
        outputs = [None if isinstance(a, RowError) else self.task.render(self.task.plan(Row(i, text)), a)
                   for i, text, a in zip(ids, get("__text"), answers)]
        out = output_table(ids, answers, outputs, self.model, self.sampling_hash, get("__shard"), get("__row"))
        done = [a for a in answers if not isinstance(a, RowError)]
        record_generation(done, metric_tags(job=self.job_name, model=self.model), errors=n - len(done),
                          engine_batch=False)
        return out


def _postprocess(row: dict) -> dict:
    """Ray's postprocess for answered rows: keep what the assembler reads (Ray passes failed rows whole)."""
    keep = ("__id", "__text", "__shard", "__row", "__row_error", "__inference_error__", "generated_text",
            "generated_tokens", "time_taken_llm")
    return {k: row.get(k) for k in keep}


@dataclass(frozen=True)
class VLLMStageSettings:
    """What the vLLM stages need from the job config (``pipelines.convert.vllm_stage_settings`` builds it).

    ``checkpoint``: absolute path; ``dtype``: ``engine.dtype``; ``max_model_len`` / ``max_num_seqs`` /
    ``engine_kwargs`` / ``cpu_kv_cache_gib``: ``engine.vllm.*``; ``batch_size``: ``workers.batch_size``;
    ``max_input_chars``: ``task.max_input_chars`` (or its default); ``job_name``: ``job.name``.
    """

    checkpoint: str
    dtype: str
    max_model_len: int | None
    engine_kwargs: dict
    max_num_seqs: int | None
    cpu_kv_cache_gib: float
    batch_size: int
    max_input_chars: int
    job_name: str = ""


def vllm_stage(ds, stage: VLLMStageSettings, task, sampling: VLLMSampling, res: dict):
    """Ray Data stages that answer every row of ``ds`` with vLLM (see the module docstring).

    Args:
        ds: rows as ``pipelines.inputs`` reads them.
        stage: the job's vLLM settings.
        task: the ``engine.tasks.Task`` ('generate' or 'rewrite').
        sampling: from ``pipelines.convert.vllm_sampling``.
        res: ``num_gpus`` / ``num_cpus`` / ``concurrency`` for the engine actors.
    """
    from ray.data.llm import build_processor

    max_len = model_max_len(stage.checkpoint, stage.max_model_len)
    preparer = VLLMRowPreparer(stage.checkpoint, task, sampling, stage.max_input_chars, max_len - sampling.max_tokens)
    processor = build_processor(_processor_config(stage, max_len, res), preprocess=preparer,
                                postprocess=_postprocess, preprocess_map_kwargs={"num_cpus": 0.25},
                                postprocess_map_kwargs={"num_cpus": 0.1})
    ds = processor(ds)
    assembler = VLLMOutputAssembler(stage.checkpoint, task, sampling, stage.job_name)
    return ds.map_batches(assembler, batch_size=None, batch_format="pyarrow", num_cpus=0.1)


def _processor_config(stage: VLLMStageSettings, max_len: int, res: dict):
    """Ray's ``vLLMEngineProcessorConfig`` for the job: redraft tokenizes itself, errors stay rows."""
    from ray.data.llm import vLLMEngineProcessorConfig

    on_gpu = res["num_gpus"] > 0
    dtype = stage.dtype
    if dtype == "auto" and not on_gpu:
        dtype = "float32"  # bf16 on CPU needs AMX tile permission in the engine process, else SIGILL
    engine_kwargs = {"dtype": dtype, "max_model_len": max_len, "seed": 0, **stage.engine_kwargs}
    if stage.max_num_seqs is not None:
        engine_kwargs["max_num_seqs"] = stage.max_num_seqs
    env = {}
    if not on_gpu:
        engine_kwargs.setdefault("enforce_eager", True)  # no CUDA graphs / compile warm-up on CPU
        env["VLLM_CPU_KVCACHE_SPACE"] = f"{stage.cpu_kv_cache_gib:g}"
    # The engine actor's resources: one bundle per replica, CPU-only where the job has no GPUs.
    bundle = {"CPU": res["num_cpus"], **({"GPU": res["num_gpus"]} if on_gpu else {})}
    concurrency = res["concurrency"]
    return vLLMEngineProcessorConfig(
        model_source=stage.checkpoint,
        engine_kwargs=engine_kwargs,
        batch_size=stage.batch_size,
        concurrency=tuple(concurrency) if isinstance(concurrency, (list, tuple)) else concurrency,
        placement_group_config={"bundles": [bundle]},
        should_continue_on_error=True,
        chat_template_stage=False, tokenize_stage=False, detokenize_stage=False,  # redraft tokenizes itself
        runtime_env={"env_vars": env} if env else None,
        log_engine_metrics=False,
    )


def vllm_sampling(checkpoint: str | Path, max_tokens: int, temperature: float, top_p: float, ignore_eos: bool,
                  seed: int) -> VLLMSampling:
    """``VLLMSampling`` with the checkpoint's end-of-sequence and end-of-turn tokens as stop tokens (the job config
    is converted by ``pipelines.convert.vllm_sampling``)."""
    checkpoint = Path(checkpoint).expanduser()
    stops: list[int] = []
    if (checkpoint / "tokenizer.json").is_file():
        tok = _tokenizer(str(checkpoint.resolve()))
        for name in (tok.eos_token, *END_OF_TURN_TOKENS):
            tid = tok.token_id(name) if name else None
            if tid is not None and tid not in stops:
                stops.append(tid)
    return VLLMSampling(max_tokens=max_tokens, temperature=temperature, top_p=top_p, ignore_eos=ignore_eos,
                        seed=seed, stop_token_ids=tuple(stops))
