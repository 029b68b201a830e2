"""How much work one Serve request may ask for, checked before any of it is queued, so that one client cannot
hold a replica (and every other client) for minutes.

Two caps from the Serve config's ``http`` section: ``max_prompts_per_request`` (prompts of one completion) and
``max_request_tokens`` (prompt tokens plus ``max_tokens``, summed over the request's prompts; for an edit, the
document's tokens plus ``max_tokens`` per span). Beyond either, the request is answered ``400`` in OpenAI's error
shape naming the request field and the config key, and nothing is generated. Prompts are counted before any is
tokenized and tokenized one by one, so a refused request costs little.
"""

from __future__ import annotations

from typing import Callable

from .openai_protocol import APIError

TOO_LARGE = "request_too_large"


def check_prompt_count(count: int, max_prompts: int, param: str = "prompt") -> None:
    """Refuse a request with more than ``max_prompts`` prompts (before any is tokenized)."""
    if count > max_prompts:
        raise APIError(400, f"{param}: {count} prompts in one request; this server takes at most {max_prompts} "
                            "(http.max_prompts_per_request); send them in several requests", param=param,
                       code=TOO_LARGE)


class TokenBudget:
    """Prompt tokens plus ``max_tokens``, summed over a request's prompts, against ``http.max_request_tokens``."""

    def __init__(self, max_tokens: int, limit: int, param: str = "prompt"):
        self.max_tokens, self.limit, self.param, self.used = max_tokens, limit, param, 0

    def add(self, prompt_tokens: int, generated: int | None = None) -> None:
        """Count one prompt of ``prompt_tokens`` tokens that may generate ``generated`` tokens (default: the
        request's ``max_tokens``); raise ``APIError(400)`` once the request is over the limit."""
        self.used += prompt_tokens + (self.max_tokens if generated is None else generated)
        if self.used > self.limit:
            raise APIError(400, f"{self.param}: the request asks for over {self.limit} tokens (prompt tokens plus "
                                f"max_tokens, summed over its prompts: {self.used} so far; http.max_request_tokens); "
                                "send fewer or shorter prompts, or a smaller max_tokens", param=self.param,
                           code=TOO_LARGE)


def encode_prompts(encode: Callable[[str, str], list[int]], prompts: list[str], max_tokens: int,
                   max_prompts: int, max_request_tokens: int, param: str = "prompt") -> list[list[int]]:
    """Each prompt's token ids (``encode(text, param)``), refusing the request as soon as it is over a cap."""
    check_prompt_count(len(prompts), max_prompts, param)
    budget = TokenBudget(max_tokens, max_request_tokens, param)
    out = []
    for text in prompts:
        ids = encode(text, param)
        budget.add(len(ids))
        out.append(ids)
    return out
