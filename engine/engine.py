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

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import DiffusionGemmaConfig
from .errors import CheckpointError, InputError
from .kv_cache import KVCache
from .models.diffusion_gemma import DiffusionGemmaModel
from .sampling.entropy_bound import StopTracker, accept_and_renoise, position_chunk, sample_pass
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
        finish_reason: ``"eos"`` or ``"length"``.
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


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"dtype: {dtype!r} is not supported; use one of {sorted(_DTYPES)}")
    return _DTYPES[dtype]


def resolve_device(device: torch.device | str) -> torch.device:
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

    # ------------------------------------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, path: str | Path, device: torch.device | str = "cpu",
                        dtype: torch.dtype | str = torch.bfloat16, name: str | None = None) -> "DiffusionEngine":
        """Load a DiffusionGemma checkpoint directory in the Hugging Face layout (``config.json`` with
        ``text_config``, ``model.safetensors`` or shards with ``model.safetensors.index.json``, ``tokenizer.json``,
        ``tokenizer_config.json``). Local files only; vision tensors are skipped.

        Raises:
            CheckpointError: the directory is missing, not a DiffusionGemma checkpoint, or its tensors do not
                match its config (every missing, unexpected or mis-shaped tensor is listed).
        """
        path = Path(path)
        if not path.exists():
            raise CheckpointError(f"checkpoint directory not found: {path}")
        if not path.is_dir():
            raise CheckpointError(f"checkpoint path is not a directory: {path}")
        cfg = DiffusionGemmaConfig.from_dir(path)
        device, dtype = resolve_device(device), resolve_dtype(dtype)
        with torch.device("meta"):
            model = DiffusionGemmaModel(cfg)
        report = load_weights(model, path, dtype, device)
        model.reset_rope(device)
        model.fuse_projections()
        model.eval()
        tokenizer = Tokenizer(path) if (path / "tokenizer.json").is_file() else None
        engine = cls(model, tokenizer, name or cfg.name)
        engine.load_report = report
        return engine

    # ------------------------------------------------------------------------------------------- properties
    @property
    def device(self) -> torch.device:
        return self.model.device

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
        """Left-pad the prompts to one length, encode them into a fresh cache with room for ``extra_slots``."""
        longest = max(len(r) for r in rows)
        pad_id = self.config.pad_token_id
        ids = torch.tensor([[pad_id] * (longest - len(r)) + r for r in rows], dtype=torch.long, device=self.device)
        pad = torch.tensor([longest - len(r) for r in rows], dtype=torch.long)
        cache = KVCache(self.config, len(rows), longest + extra_slots, pad, self.model.dtype, self.device)
        self.model.encode(ids, cache)
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

    @torch.no_grad()
    def generate_ids(self, prompt_ids, params: SamplingParams, seeds: list[int] | None = None,
                     on_pass=None) -> list[GenerationResult]:
        """Token-level generate. ``on_pass(rows, argmax_BC)``, if given, sees each pass's argmax canvases
        (``rows`` are indices into the call's prompts), e.g. to stream drafts."""
        rows = self._check_prompt_ids(prompt_ids)
        if not isinstance(params, SamplingParams):
            raise TypeError(f"params must be SamplingParams, got {type(params).__name__}")
        n = len(rows)
        seeds = [params.seed] * n if seeds is None else list(seeds)
        if len(seeds) != n:
            raise InputError(f"got {len(seeds)} seeds for {n} prompts")
        cfg, device = self.config, self.device
        c, v = cfg.canvas_length, cfg.vocab_size
        start = time.perf_counter()
        n_canvases = math.ceil(params.max_new_tokens / c)
        # positions: a row may not run past max_position_embeddings
        room = [min(n_canvases, (cfg.max_position_embeddings - len(r)) // c) for r in rows]
        gens = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
        eos = torch.tensor(self.eos_ids, device=device)
        tokens: list[list[int]] = [[] for _ in range(n)]
        passes, canvases, corrections = [0] * n, [0] * n, [0] * n
        finish: list[str | None] = [None] * n
        seconds = [0.0] * n
        chunk = position_chunk(v)

        cache = self._prefill(rows, max(room) * c)
        active = list(range(n))  # rows still generating, in cache-row order
        for _ in range(max(room)):
            a = len(active)
            canvas = torch.stack([torch.randint(0, v, (c,), generator=gens[r], device=device) for r in active])
            final = canvas.clone()
            tracker = StopTracker(a, c, params.stability_threshold, params.confidence_threshold, device)
            den = torch.arange(a, device=device)  # active-local rows still denoising
            den_cache, soft, prev_accepted = cache, None, None
            for step in range(params.max_denoising_steps, 0, -1):
                logits = self._logits(self.model.decode(canvas, den_cache, soft))
                row_gens = [gens[active[i]] for i in den.tolist()]
                cand, argmax, entropy, soft = sample_pass(logits, params.temperature(step), row_gens,
                                                          self.model.soft_embeddings, chunk)
                del logits
                noise = torch.stack([torch.randint(0, v, (c,), generator=g, device=device) for g in row_gens])
                canvas, accepted = accept_and_renoise(entropy, cand, noise, params.entropy_bound)
                final[den] = argmax
                if prev_accepted is not None:
                    fixed = (prev_accepted & ~accepted).sum(-1).tolist()
                    for i, k in zip(den.tolist(), fixed):
                        corrections[active[i]] += k
                for i in den.tolist():
                    passes[active[i]] += 1
                if on_pass is not None:
                    on_pass([active[i] for i in den.tolist()], argmax)
                prev_accepted = accepted
                if params.fixed_steps:
                    continue
                stop = tracker.update(den, argmax, entropy)
                if bool(stop.any()):
                    keep = ~stop
                    den, canvas, soft, prev_accepted = den[keep], canvas[keep], soft[keep], prev_accepted[keep]
                    if den.numel() == 0:
                        break
                    den_cache = cache.select(den)
            # the canvas is done: take each row's argmax up to EOS, then commit the survivors
            still = []
            is_eos = torch.isin(final, eos) if not params.ignore_eos else torch.zeros_like(final, dtype=torch.bool)
            first_eos = torch.where(is_eos.any(-1), is_eos.int().argmax(-1), c).tolist()
            final_rows = final.tolist()
            now = time.perf_counter() - start
            for i, r in enumerate(active):
                canvases[r] += 1
                take = final_rows[i][:first_eos[i]]
                tokens[r].extend(take[:params.max_new_tokens - len(tokens[r])])
                if first_eos[i] < c:
                    finish[r] = "eos"
                elif len(tokens[r]) >= params.max_new_tokens or canvases[r] >= room[r]:
                    finish[r] = "length"
                else:
                    still.append(i)
                    continue
                seconds[r] = now
            if not still:
                break
            if len(still) < a:
                keep_idx = torch.tensor(still, device=device)
                cache, final = cache.select(keep_idx), final[keep_idx]
            active = [active[i] for i in still]
            self.model.encode(final, cache)

        out = []
        for r in range(n):
            text = self.tokenizer.decode(tokens[r]) if self.tokenizer is not None else ""
            out.append(GenerationResult(text=text, token_ids=tokens[r], num_canvases=canvases[r], num_passes=passes[r],
                                        tokens_per_pass=len(tokens[r]) / max(passes[r], 1), seconds=seconds[r],
                                        finish_reason=finish[r] or "length", num_self_corrections=corrections[r]))
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
