"""Prompt/completion tokenisation shared by the collator and the evaluators.

Two boundary policies (``shared/design/benchmarks.md`` §1.1):

* ``separate`` (default for training, TRL's way): ``ids(prompt) + ids(completion) + [eos]``. Every
  completion token is scored, and a generation prompt is exactly ``ids(prompt)``.
* ``joint`` (open-unlearning's way, used by its evaluation protocol): ``ids(prompt + completion)``
  with the first ``len(ids(prompt))`` positions masked. With byte-level BPE the prompt's trailing
  space merges into the first answer token, which is then never scored; reproduced on purpose for
  comparability with published numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

Boundary = Literal["separate", "joint"]
Encode = Callable[[str, bool], list[int]]  # (text, add_special_tokens) -> ids


def _encode(tokenizer, text: str, add_special_tokens: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])


def encode_prompt_completion(
    tokenizer,
    prompt: str,
    completion: str,
    *,
    boundary: Boundary = "separate",
    add_eos: bool = True,
    add_special_tokens: bool = True,
    encode: Encode | None = None,
) -> tuple[list[int], list[int]]:
    """Return ``(prompt_ids, completion_ids)``; ``completion_ids`` are the scored tokens.

    ``add_special_tokens`` applies to the prompt (BOS for tokenizers that use one); pass False for
    text that a chat template already rendered with its own special tokens. ``encode``: the
    tokenisation to use instead of calling ``tokenizer`` (an evaluator's cache); it must return a
    fresh list.
    """
    enc = encode or (lambda text, special: _encode(tokenizer, text, special))
    if boundary == "separate":
        prompt_ids = enc(prompt, add_special_tokens)
        completion_ids = enc(completion, False)
    elif boundary == "joint":
        prompt_ids = enc(prompt, add_special_tokens)
        full = enc(prompt + completion, add_special_tokens)
        completion_ids = full[len(prompt_ids) :]
        prompt_ids = full[: len(prompt_ids)]
    else:
        raise ValueError(f"Unknown boundary {boundary!r}; use 'separate' or 'joint'.")
    eos = tokenizer.eos_token_id
    if add_eos and eos is not None and (not completion_ids or completion_ids[-1] != eos):
        completion_ids.append(eos)
    return prompt_ids, completion_ids
