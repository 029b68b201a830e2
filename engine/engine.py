"""``DiffusionEngine``: a DiffusionGemma checkpoint loaded for inference, with token- and text-level APIs.

Block diffusion, one loop for every use: prompts are encoded causally into the KV cache; then, canvas after
canvas, a canvas of ``canvas_length`` uniform-random tokens is denoised by the bidirectional decoder for up to
``max_denoising_steps`` passes (entropy-bounded acceptance, renoising, self-conditioning), its argmax is
committed to the cache by the encoder, and the next canvas follows until EOS or ``max_new_tokens``.

Rows leave the denoising batch as soon as they stop (their cache rows are dropped from the decoder's view),
and leave the generation at the canvas where they reach EOS or their token budget. Every random draw of a row
comes from that row's own ``torch.Generator``, so a (prompt, seed) pair gives the same text in any batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .config import DiffusionGemmaConfig
from .errors import CheckpointError, InputError, NonFiniteError
from .kv_cache import KVCache
from .models.diffusion_gemma import DiffusionGemmaModel
from .quantize import QuantizedExperts, check_quantization, quantize_model
from .plans import FREE, plan_clamped, plan_generation
from .scheduler import Scheduler
from .sampling.entropy_bound import position_chunk
from .sampling.params import SamplingParams
from .tokenizer import Tokenizer
from .weights import load_weights

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}
_END_OF_TURN = ("<end_of_turn>", "<turn|>")


@dataclass
class GenerationResult:
    """What one prompt produced.

    Attributes:
        text: the generated text (up to, not including, the end-of-sequence token).
        token_ids: the generated token ids (same span as ``text``).
        num_canvases: canvases denoised for this row.
        num_passes: decoder (denoising) passes spent on this row, all canvases together.
        tokens_per_pass: ``len(token_ids) / num_passes``.
        seconds: wall time from the start of the call until this row finished.
        finish_reason: ``"eos"``, ``"length"`` or ``"stop"`` (ended by the caller's ``on_commit``).
        num_self_corrections: positions accepted on one pass and renoised on the next.
    """

    text: str
    token_ids: list[int]
    num_canvases: int
    num_passes: int
    tokens_per_pass: float
    seconds: float
    finish_reason: str
    num_self_corrections: int = 0


@dataclass
class CanvasResult:
    """What one clamped layout became (``DiffusionEngine.denoise_canvases``).

    Attributes:
        token_ids: the final tokens, one per layout position; clamped positions equal the layout.
        free_ids: the tokens at the free positions, in order.
        num_canvases: canvases denoised for this row.
        num_passes: decoder passes spent on this row.
        tokens_per_pass: free positions per pass.
        seconds: wall time from the start of the call until this row finished.
        num_self_corrections: free positions accepted on one pass and renoised on the next.
    """

    token_ids: list[int]
    free_ids: list[int]
    num_canvases: int
    num_passes: int
    tokens_per_pass: float
    seconds: float
    num_self_corrections: int = 0


def _check_finite(outcomes: list) -> list:
    """Raise ``NonFiniteError`` when any row saw NaN/Inf (never return its garbage as a result)."""
    bad = [r for r, o in enumerate(outcomes) if o.error is not None]
    if bad:
        raise NonFiniteError(bad, [outcomes[r].error for r in bad])
    return outcomes


def resolve_dtype(dtype: torch.dtype | str, device: torch.device) -> torch.dtype:
    """``"auto"``: bfloat16 on CUDA, float32 elsewhere."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"dtype: {dtype!r} is not supported; use one of {sorted(_DTYPES)}")
    return _DTYPES[dtype]


def resolve_device(device: torch.device | str) -> torch.device:
    """``"auto"``: CUDA when this process can see a GPU (a Ray actor given one), else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class DiffusionEngine:
    def __init__(self, model: DiffusionGemmaModel, tokenizer: Tokenizer | None, name: str):
        self.model = model
        self.config: DiffusionGemmaConfig = model.cfg
        self.tokenizer = tokenizer
        self.model_name = name
        eos = set(self.config.eos_token_ids)
        if tokenizer is not None:
            for tok in (tokenizer.eos_token, *_END_OF_TURN):
                if tok and tokenizer.token_id(tok) is not None:
                    eos.add(tokenizer.token_id(tok))
        self.eos_ids = sorted(eos)
        self.load_report: dict = {}
        # canvases denoised together when a call does not say (None: all of the call's rows); a bulk worker sets
        # it so that big batches run as a queue behind a full decoder batch (continuous batching)
        self.max_inflight: int | None = None

    # ------------------------------------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, path: str | Path, device: torch.device | str = "cpu",
                        dtype: torch.dtype | str = torch.bfloat16, name: str | None = None,
                        quantization: str | None = None, batch_invariant: bool = False) -> "DiffusionEngine":
        """Load a DiffusionGemma checkpoint directory in the Hugging Face layout (``config.json`` with
        ``text_config``, ``model.safetensors`` or shards with ``model.safetensors.index.json``, ``tokenizer.json``,
        ``tokenizer_config.json``). Local files only; vision tensors are skipped. ``device`` and ``dtype`` may be
        ``"auto"`` (CUDA when visible, else CPU; bfloat16 on CUDA, else float32): resolved here, for every caller.

        ``quantization``: ``None``/``"none"``, ``"int8"`` or ``"fp8"``: the routed experts' weights are stored
        at one byte per weight with per-channel scales (``engine/quantize.py``); the checkpoint is then read
        into host memory first and quantized layer by layer on ``device``.

        ``batch_invariant`` (default off: 0.33-0.53x the tokens/s on CPU): a row's text depends only on its
        prompt, seed, parameters and the checkpoint, never on the rows that share its batch, the batch size or
        ``max_inflight`` (every matrix product runs in fixed-shape tiles and attention is always masked; see
        ``engine/layers/invariant.py`` and the README's cost table). Off: the plain kernels, whose last bits
        move with the batch.

        Raises:
            CheckpointError: the directory is missing, not a DiffusionGemma checkpoint, or its tensors do not
                match its config (every missing, unexpected or mis-shaped tensor is listed).
        """
        path = Path(path)
        if not path.exists():
            raise CheckpointError(f"checkpoint directory not found: {path}")
        if not path.is_dir():
            raise CheckpointError(f"checkpoint path is not a directory: {path}")
        quantization = check_quantization(quantization)
        cfg = DiffusionGemmaConfig.from_dir(path)
        device = resolve_device(device)
        dtype = resolve_dtype(dtype, device)
        with torch.device("meta"):
            model = DiffusionGemmaModel(cfg)
        report = load_weights(model, path, dtype, device if quantization == "none" else "cpu")
        model.reset_rope(device)
        quantize_model(model, quantization, device)
        model.eval()
        tokenizer = Tokenizer(path) if (path / "tokenizer.json").is_file() else None
        engine = cls(model, tokenizer, name or cfg.name)
        engine.load_report = report
        engine.batch_invariant = batch_invariant
        return engine

    # ------------------------------------------------------------------------------------------- properties
    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def batch_invariant(self) -> bool:
        """Rows independent of their batch mates (``from_pretrained``'s ``batch_invariant``); settable."""
        return self.model.batch_invariant

    @batch_invariant.setter
    def batch_invariant(self, enabled: bool) -> None:
        if enabled and any(isinstance(m, QuantizedExperts) for m in self.model.modules()):
            raise InputError("batch_invariant: the batch-invariant tiles cover unquantized experts only; load the "
                             "checkpoint with quantization 'none' or leave batch_invariant off")
        self.model.set_batch_invariant(enabled)

    @property
    def canvas_length(self) -> int:
        return self.config.canvas_length

    @property
    def max_prompt_tokens(self) -> int:
        """Longest prompt that still leaves room for one canvas within the model's positions."""
        return self.config.max_position_embeddings - self.config.canvas_length

    # ------------------------------------------------------------------------------------------- text helpers
    def apply_chat_template(self, messages: list[dict]) -> str:
        return self._need_tokenizer().apply_chat_template(messages, add_generation_prompt=True)

    def encode_prompts(self, prompts: list[str], chat: bool = False) -> list[list[int]]:
        tok = self._need_tokenizer()
        out = []
        for i, prompt in enumerate(prompts):
            if not isinstance(prompt, str):
                raise InputError(f"prompt {i}: expected a string, got {type(prompt).__name__}")
            if not prompt.strip():
                raise InputError(f"prompt {i} is empty")
            text = self.apply_chat_template([{"role": "user", "content": prompt}]) if chat else prompt
            out.append(tok.encode(text))
        return out

    def _need_tokenizer(self) -> Tokenizer:
        if self.tokenizer is None:
            raise InputError("this checkpoint has no tokenizer.json; pass token ids instead of text")
        return self.tokenizer

    def _check_prompt_ids(self, prompt_ids) -> list[list[int]]:
        if isinstance(prompt_ids, torch.Tensor):
            prompt_ids = prompt_ids.tolist() if prompt_ids.ndim == 2 else [prompt_ids.tolist()]
        rows = [p.tolist() if isinstance(p, torch.Tensor) else list(p) for p in prompt_ids]
        if not rows:
            raise InputError("no prompts given")
        vocab = self.config.vocab_size
        for i, ids in enumerate(rows):
            if not ids:
                raise InputError(f"prompt {i} is empty")
            if len(ids) > self.max_prompt_tokens:
                raise InputError(f"prompt {i} has {len(ids)} tokens; this model takes at most {self.max_prompt_tokens} "
                                 f"(max_position_embeddings {self.config.max_position_embeddings} less one canvas "
                                 f"of {self.canvas_length})")
            if min(ids) < 0 or max(ids) >= vocab:
                raise InputError(f"prompt {i} has token ids outside [0, {vocab})")
        return rows

    # ------------------------------------------------------------------------------------------- token level
    def _prefill(self, rows: list[list[int]], extra_slots: int) -> KVCache:
        """Encode the prompts (right-padded to one length; each row keeps its own length) into a fresh cache
        with room for ``extra_slots`` more tokens per row."""
        longest = max(len(r) for r in rows)
        pad_id = self.config.pad_token_id
        ids = torch.tensor([r + [pad_id] * (longest - len(r)) for r in rows], dtype=torch.long, device=self.device)
        cache = KVCache(self.config, len(rows), longest + extra_slots, self.model.dtype, self.device)
        self.model.encode(ids, cache, valid=[len(r) for r in rows])
        return cache

    def _logits(self, hidden_BCD: torch.Tensor) -> torch.Tensor:
        b, c, d = hidden_BCD.shape
        out = torch.empty(b, c, self.config.vocab_size, dtype=torch.float32, device=hidden_BCD.device)
        rows = position_chunk(self.config.vocab_size)
        self.model.logits_into(hidden_BCD.reshape(-1, d), out.view(-1, self.config.vocab_size), rows)
        return out

    @torch.no_grad()
    def canvas_logits(self, prompt_ids, canvas_ids, self_condition: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder logits for canvases that follow prompts.

        Args:
            prompt_ids: one token-id list (or 1-D tensor) per row; rows may differ in length. A 2-D tensor
                is taken as equal-length rows. The prompts are encoded causally into the cache first.
            canvas_ids: ``[B, canvas_len]`` token ids (tensor or nested lists).
            self_condition: optional ``[B, canvas_len, vocab]`` logits of a previous pass (the reference's
                ``self_conditioning_logits``); their softmax is embedded and fed to the self-conditioning MLP.

        Returns:
            fp32 softcapped logits ``[B, canvas_len, vocab]``.
        """
        rows = self._check_prompt_ids(prompt_ids)
        canvas = torch.as_tensor(canvas_ids, dtype=torch.long, device=self.device)
        if canvas.ndim != 2 or canvas.shape[0] != len(rows):
            raise InputError(f"canvas_ids must be [batch={len(rows)}, canvas_len], got {list(canvas.shape)}")
        if canvas.numel() and (canvas.min() < 0 or canvas.max() >= self.config.vocab_size):
            raise InputError(f"canvas_ids has token ids outside [0, {self.config.vocab_size})")
        soft = None
        if self_condition is not None:
            expected = (canvas.shape[0], canvas.shape[1], self.config.vocab_size)
            if tuple(self_condition.shape) != expected:
                raise InputError(f"self_condition must be {list(expected)}, got {list(self_condition.shape)}")
            sc = self_condition.to(self.device).reshape(-1, self.config.vocab_size)
            step = position_chunk(self.config.vocab_size)
            soft = torch.cat([self.model.soft_embeddings(torch.softmax(sc[s:s + step].float(), -1))
                              for s in range(0, sc.shape[0], step)]).view(*canvas.shape, -1)
        cache = self._prefill(rows, canvas.shape[1])
        return self._logits(self.model.decode(canvas, cache, soft))

    def _check_seeds(self, seeds, n: int, params: SamplingParams) -> list[int]:
        if not isinstance(params, SamplingParams):
            raise TypeError(f"params must be SamplingParams, got {type(params).__name__}")
        seeds = [params.seed] * n if seeds is None else list(seeds)
        if len(seeds) != n:
            raise InputError(f"got {len(seeds)} seeds for {n} prompts")
        return seeds

    @torch.no_grad()
    def generate_ids(self, prompt_ids, params: SamplingParams, seeds: list[int] | None = None,
                     on_pass=None, max_inflight: int | None = None, on_commit=None) -> list[GenerationResult]:
        """Token-level generate. ``on_pass(rows, argmax_BC)``, if given, sees each pass's argmax canvases
        (``rows`` are indices into the call's prompts), e.g. to stream drafts. ``on_commit(row, tokens, last)``,
        if given, sees each row's tokens after every canvas it finishes (``last``: the row is done); returning
        True ends the row there with ``finish_reason`` ``'stop'`` (a stop string, a client that left).

        ``max_inflight``: canvases denoised together (default: all rows). With fewer than the number of rows,
        rows wait in a queue and each takes the place of a finished row at once (step-level continuous
        batching); every row's output is the same as when it runs alone with its seed (up to the fp32 rounding
        of batched kernels, about 1e-5 in the logits, which a draw very rarely crosses)."""
        rows = self._check_prompt_ids(prompt_ids)
        seeds = self._check_seeds(seeds, len(rows), params)
        plans = plan_generation(rows, seeds, params, self.canvas_length, self.config.max_position_embeddings)
        outcomes = _check_finite(Scheduler(self, params, plans, max_inflight or self.max_inflight, on_pass=on_pass,
                                           on_commit=on_commit).run())
        out = []
        for o in outcomes:
            text = self.tokenizer.decode(o.tokens) if self.tokenizer is not None else ""
            out.append(GenerationResult(text=text, token_ids=o.tokens, num_canvases=o.num_canvases,
                                        num_passes=o.num_passes, tokens_per_pass=len(o.tokens) / max(o.num_passes, 1),
                                        seconds=o.seconds, finish_reason=o.finish_reason,
                                        num_self_corrections=o.num_corrections))
        return out

    @torch.no_grad()
    def denoise_canvases(self, prompt_ids, known: list[list[int]], params: SamplingParams,
                         seeds: list[int] | None = None, allowed: list[list[int] | None] | None = None,
                         allowed_masks: torch.Tensor | None = None, on_pass=None,
                         max_inflight: int | None = None) -> list[CanvasResult]:
        """Denoise clamped canvases: the engine side of infill, span edits and structured output.

        Args:
            prompt_ids: per row, the causal context before the canvases (encoded into the KV cache).
            known: per row, a layout of any length ``L >= 1``: ``FREE`` (-1) at positions to denoise, a token id
                at clamped positions, which are never renoised or changed and which every free position of the
                same canvas sees (text after a hole is visible). The layout is cut into canvases of
                ``canvas_length``; canvas k is denoised with canvases before it committed to the cache; the tail
                of the last canvas is clamped to the pad token; canvases after the last free position are not run.
            params: denoising settings (``max_new_tokens`` and ``ignore_eos`` are not used: free positions may
                become EOS or pad tokens and the caller decides what to keep).
            seeds: one per row (default ``params.seed``).
            allowed: per row ``None`` or ``L`` ints: -1 = any token, else a row of ``allowed_masks``, a bool
                ``[M, vocab_size]`` tensor (True = allowed). Ignored at clamped positions.
            on_pass, max_inflight: as in ``generate_ids``.

        Returns:
            One ``CanvasResult`` per row. A row's result depends only on its own inputs and seed (up to the
            fp32 rounding of batched kernels, as in ``generate_ids``).
        """
        rows = self._check_prompt_ids(prompt_ids)
        seeds = self._check_seeds(seeds, len(rows), params)
        num_masks = 0
        if allowed_masks is not None:
            if allowed_masks.ndim != 2 or allowed_masks.shape[1] != self.config.vocab_size:
                raise InputError(f"allowed_masks must be [M, {self.config.vocab_size}], got {list(allowed_masks.shape)}")
            empty = (~allowed_masks.bool().any(-1)).nonzero().flatten().tolist()
            if empty:
                raise InputError(f"allowed_masks rows {empty} allow no token")
            num_masks = allowed_masks.shape[0]
        plans = plan_clamped(rows, seeds, known, allowed, num_masks, self.config.vocab_size, self.config.pad_token_id,
                             self.canvas_length, self.config.max_position_embeddings)
        outcomes = _check_finite(Scheduler(self, params, plans, max_inflight or self.max_inflight, allowed_masks,
                                           on_pass).run())
        out = []
        for row_known, o in zip(known, outcomes):
            row_known = list(row_known)
            n = len(row_known)
            final = (o.tokens + row_known[len(o.tokens):])[:n]
            free_ids = [t for t, k in zip(final, row_known) if k == FREE]
            out.append(CanvasResult(token_ids=final, free_ids=free_ids, num_canvases=o.num_canvases,
                                    num_passes=o.num_passes, tokens_per_pass=len(free_ids) / max(o.num_passes, 1),
                                    seconds=o.seconds, num_self_corrections=o.num_corrections))
        return out

    # ------------------------------------------------------------------------------------------- text level
    def generate(self, prompts: list[str], params: SamplingParams | None = None, *, chat: bool = False,
                 seeds: list[int] | None = None) -> list[GenerationResult]:
        """Generate a continuation (or, with ``chat=True``, a chat reply) for each prompt.

        Args:
            prompts: the prompts; each must be a non-empty string within ``max_prompt_tokens`` tokens.
            params: sampling parameters (DiffusionGemma's reference defaults when omitted).
            chat: wrap each prompt as a user turn through the checkpoint's chat template.
            seeds: one seed per prompt (default: ``params.seed`` for every row).

        Returns:
            One ``GenerationResult`` per prompt, in order.
        """
        if isinstance(prompts, str):
            raise InputError("prompts must be a list of strings, not one string")
        params = params or SamplingParams()
        return self.generate_ids(self.encode_prompts(list(prompts), chat=chat), params, seeds=seeds)
