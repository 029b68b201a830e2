"""Tokenizer from a checkpoint's ``tokenizer.json`` (the ``tokenizers`` library) and its chat template.

The template comes from ``tokenizer_config.json`` (``chat_template``) or ``chat_template.jinja`` and is
rendered in a sandboxed Jinja environment, as transformers does; no remote code runs.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import CheckpointError, InputError


class Tokenizer:
    def __init__(self, path: str | Path):
        from tokenizers import Tokenizer as _HFTokenizer

        path = Path(path)
        tok_file = path / "tokenizer.json"
        if not tok_file.is_file():
            raise CheckpointError(f"{path}: no tokenizer.json")
        try:
            self._tok = _HFTokenizer.from_file(str(tok_file))
        except Exception as exc:  # the library raises a bare Exception on a bad file
            raise CheckpointError(f"{tok_file}: cannot load tokenizer ({exc})") from None
        cfg_file = path / "tokenizer_config.json"
        self.config = json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
        template = self.config.get("chat_template")
        jinja_file = path / "chat_template.jinja"
        if template is None and jinja_file.is_file():
            template = jinja_file.read_text()
        if isinstance(template, list):  # [{"name": "default", "template": ...}, ...]
            template = next((t["template"] for t in template if t.get("name") == "default"), template[0]["template"])
        self.chat_template: str | None = template
        self.bos_token = self._token_str("bos_token")
        self.eos_token = self._token_str("eos_token")
        self.bos_id = self._tok.token_to_id(self.bos_token) if self.bos_token else None
        self.add_bos = bool(self.config.get("add_bos_token", True)) and self.bos_id is not None
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)

    def _token_str(self, key: str) -> str | None:
        value = self.config.get(key)
        if isinstance(value, dict):
            value = value.get("content")
        return value

    def token_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        """Token ids of ``text``; a BOS is put first (once) when the checkpoint asks for it."""
        ids = self._tok.encode(text, add_special_tokens=False).ids
        if add_bos and self.add_bos and (not ids or ids[0] != self.bos_id):
            ids = [self.bos_id] + ids
        return ids

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """Render ``messages`` (``[{"role": "user", "content": "..."}]``) with the checkpoint's chat template."""
        if not self.chat_template:
            raise InputError("this checkpoint has no chat template (tokenizer_config.json: chat_template)")
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message):
            raise InputError(f"chat template: {message}")

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = raise_exception
        return env.from_string(self.chat_template).render(
            messages=messages, add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token or "", eos_token=self.eos_token or "")

    def token_strings(self) -> list[str]:
        """The text of every token id on its own (``decode([id])``, special tokens included), cached.

        Used to build allowed-token masks (digits only, string-safe, ...) once per tokenizer rather than once per
        row. A token that is an incomplete UTF-8 sequence on its own (a byte-fallback or byte-level piece) shows
        as U+FFFD here.
        """
        cached = getattr(self, "_token_strings", None)
        if cached is None:
            cached = self._tok.decode_batch([[i] for i in range(self.vocab_size)], skip_special_tokens=False)
            self._token_strings = cached
        return cached

    def special_ids(self) -> set[int]:
        """Ids of the tokenizer's special (control) tokens: pad, BOS, EOS, turn markers, ..."""
        return {i for i, tok in self._tok.get_added_tokens_decoder().items() if tok.special}

    def tail(self, text: str, max_tokens: int) -> tuple[str, list[int]]:
        """The end of ``text`` that holds at most ``max_tokens`` tokens (no BOS), as text and ids.

        Used for the context before a window of a long document: only the last ``16 * max_tokens`` characters
        are tokenized, so the cost does not grow with the document. The cut falls on a token boundary that is
        also a character boundary (a character split over several byte-level tokens is kept whole or left out).
        """
        if max_tokens <= 0 or not text:
            return "", []
        start = max(0, len(text) - 16 * max_tokens)
        piece = text[start:]
        enc = self._tok.encode(piece, add_special_tokens=False)
        ids, offsets = enc.ids, enc.offsets
        k = max(1 if start > 0 else 0, len(ids) - max_tokens)  # a token cut by the slice start is dropped
        while 0 < k < len(ids) and offsets[k][0] < offsets[k - 1][1]:
            k += 1
        if k >= len(ids):
            return "", []
        return piece[offsets[k][0]:], ids[k:]
