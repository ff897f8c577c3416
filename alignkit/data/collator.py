"""The one preference collator every alignkit method shares.

``PreferenceCollator.encode`` tokenises a record once (a trainer runs it through
``datasets.map``, so it is cached); ``__call__`` pads a list of encoded (or raw) rows into tensors
ready for ONE forward over every completion of the batch, followed by the retain rows:

=====================  ===========  ====================================================
key                    shape        meaning
=====================  ===========  ====================================================
``input_ids``          [N, L]       prompt + completion of each row, right-padded
``attention_mask``     [N, L]       1 on real tokens
``completion_mask``    [N, L]       1 on completion tokens (the only tokens ever scored)
``group_sizes``        [B]          K of each prompt (K may differ per row)
``group_index``        [N_main]     which prompt each main row belongs to
``roles``              [N_main]     index into ``ROLES`` (chosen, rejected, answer, ...)
``scores``             [N_main]     the list values as the data gave them (scores, ranks or
                                    labels: ``PreferenceRecord.score_kind``), NaN where none
``ref_logps``          [N_main]     precomputed reference log-probs (only when present)
``num_main``           int          rows ``[:num_main]`` are main rows, the rest retain
=====================  ===========  ====================================================

Truncation policy (per completion row), applied once at encoding:
1. the prompt keeps its LAST ``max_prompt_length`` tokens (the end is closest to the answer);
2. a completion keeps its FIRST ``max_completion_length`` tokens (EOS is lost if cut);
3. if prompt + completion exceeds ``max_length``, the completion is cut from the end to fit;
   a prompt that leaves no room for a single completion token is an error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from alignkit.data.prompt_format import PromptFormat
from alignkit.data.records import ROLE_IDS, PreferenceRecord, RecordError, normalize_record
from alignkit.data.tokenize import Boundary, encode_prompt_completion


@dataclass
class PreferenceCollator:
    tokenizer: Any
    max_prompt_length: int | None = None
    max_completion_length: int | None = None
    max_length: int | None = None
    prompt_format: PromptFormat | None = None  # for question/answer rows; default from the tokenizer
    boundary: Boundary = "separate"
    pad_to_multiple_of: int | None = None

    def __post_init__(self):
        if self.tokenizer.pad_token_id is None:
            if self.tokenizer.eos_token_id is None:
                raise ValueError(
                    "The tokenizer has neither a pad nor an EOS token; set `tokenizer.pad_token`."
                )
            self.tokenizer.pad_token = self.tokenizer.eos_token  # TRL's convention
        if self.prompt_format is None:
            self.prompt_format = PromptFormat.for_tokenizer(self.tokenizer)

    # ---------------------------------------------------------------- encoding (once per row)
    def _texts(self, record: PreferenceRecord, err) -> tuple[str, list[str], bool]:
        """Prompt text, completion texts, and whether the prompt needs the tokenizer's specials."""
        fmt = self.prompt_format
        if record.is_qa and fmt.mode == "chat":
            # A question/answer row under a chat template is a one-turn conversation: the answer is
            # rendered as the assistant turn (with the template's end-of-turn marker), exactly as
            # the evaluation scores it (open-unlearning's chat mode).
            record = PreferenceRecord(
                [{"role": "user", "content": record.prompt}],
                [
                    c if isinstance(c, list) else [{"role": "assistant", "content": c}]
                    for c in record.completions
                ],
                record.roles,
                record.scores,
                record.score_kind,
            )
        elif record.is_qa:
            return fmt.render_prompt(self.tokenizer, record.prompt), record.completions, True
        if not record.conversational:
            return record.prompt, record.completions, True
        prompt_text = fmt.render_messages(self.tokenizer, record.prompt, add_generation_prompt=True)
        completions = []
        for j, completion in enumerate(record.completions):
            full = fmt.render_messages(
                self.tokenizer, record.prompt + completion, add_generation_prompt=False
            )
            if not full.startswith(prompt_text):
                raise err(
                    f"completions[{j}]",
                    "the chat template does not render the prompt as a prefix of "
                    "prompt + completion, so the completion cannot be located; use a prefix-preserving template",
                )
            completions.append(full[len(prompt_text) :])
        return prompt_text, completions, False

    def _truncate(self, prompt_ids: list[int], completion_ids: list[int], err, j: int):
        if self.max_prompt_length is not None and len(prompt_ids) > self.max_prompt_length:
            prompt_ids = prompt_ids[len(prompt_ids) - self.max_prompt_length :]
        if self.max_completion_length is not None:
            completion_ids = completion_ids[: self.max_completion_length]
        if self.max_length is not None:
            room = self.max_length - len(prompt_ids)
            if room < 1:
                raise err(
                    "prompt",
                    f"has {len(prompt_ids)} tokens after truncation, which leaves no room for any "
                    f"completion token within max_length={self.max_length}; raise `max_length` or set "
                    "`max_prompt_length`",
                )
            completion_ids = completion_ids[:room]
        if not completion_ids:
            raise err(f"completions[{j}]", "has no tokens after tokenisation/truncation")
        return prompt_ids, completion_ids

    def encode(self, row: dict | PreferenceRecord, index: int = 0, source: str = "dataset") -> dict:
        """Tokenise one row: ``prompt_ids`` [P], ``completion_ids`` [K][C_k], ``roles`` [K], ``scores`` [K]."""
        record = (
            row if isinstance(row, PreferenceRecord) else normalize_record(row, index=index, source=source)
        )

        def err(field_name: str, problem: str) -> RecordError:
            return RecordError(source, index, field_name, problem)

        prompt_text, completion_texts, specials = self._texts(record, err)
        prompt_rows, completion_rows = [], []
        for j, completion in enumerate(completion_texts):
            p, c = encode_prompt_completion(
                self.tokenizer, prompt_text, completion, boundary=self.boundary, add_special_tokens=specials
            )
            p, c = self._truncate(p, c, err, j)
            prompt_rows.append(p)
            completion_rows.append(c)
        scores = record.scores if record.scores is not None else [math.nan] * len(completion_rows)
        return {
            # With the `separate` boundary every completion shares one prompt; `joint` may differ
            # per completion, so prompts are stored per row.
            "prompt_ids": prompt_rows,
            "completion_ids": completion_rows,
            "roles": [ROLE_IDS[r] for r in record.roles],
            "scores": [float(s) for s in scores],
        }

    def encode_prompt(self, record: PreferenceRecord, index: int = 0, source: str = "dataset") -> list[int]:
        """Token ids of the prompt alone, where generation starts: the rendering and left truncation of ``encode``."""

        def err(field_name: str, problem: str) -> RecordError:
            return RecordError(source, index, field_name, problem)

        bare = PreferenceRecord(record.prompt, [], [], is_qa=record.is_qa)
        prompt_text, _, specials = self._texts(bare, err)
        ids = list(self.tokenizer(prompt_text, add_special_tokens=specials)["input_ids"])
        if self.max_prompt_length is not None:
            ids = ids[max(0, len(ids) - self.max_prompt_length) :]
        return ids

    # ---------------------------------------------------------------- collation
    def _ensure_encoded(self, feature: dict, i: int) -> dict:
        return feature if "completion_ids" in feature else self.encode(feature, index=i, source="batch")

    def __call__(self, features: list[dict]) -> dict[str, Any]:
        features = [self._ensure_encoded(f, i) for i, f in enumerate(features)]
        rows: list[tuple[list[int], list[int]]] = []
        group_sizes, roles, scores, ref = [], [], [], []
        for f in features:
            k = len(f["completion_ids"])
            group_sizes.append(k)
            rows += list(zip(f["prompt_ids"], f["completion_ids"]))
            roles += f["roles"]
            scores += f["scores"]
            if "ref_logps" in f:
                ref += list(f["ref_logps"])
        num_main = len(rows)
        for f in features:
            if "retain_completion_ids" in f:
                rows += list(zip(f["retain_prompt_ids"], f["retain_completion_ids"]))
        batch = self._pad(rows)
        batch["group_sizes"] = torch.tensor(group_sizes, dtype=torch.long)
        batch["group_index"] = torch.repeat_interleave(torch.arange(len(features)), batch["group_sizes"])
        batch["roles"] = torch.tensor(roles, dtype=torch.long)
        batch["scores"] = torch.tensor(scores, dtype=torch.float32)
        batch["num_main"] = num_main
        if ref:
            if len(ref) != num_main:
                raise ValueError("`ref_logps` must be present for every row of the batch or for none")
            batch["ref_logps"] = torch.tensor(ref, dtype=torch.float32)
        return batch

    def _pad(self, rows: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
        length = max(len(p) + len(c) for p, c in rows)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        n = len(rows)
        input_ids = torch.full((n, length), self.tokenizer.pad_token_id, dtype=torch.long)
        attention = torch.zeros((n, length), dtype=torch.long)
        completion = torch.zeros((n, length), dtype=torch.long)
        for i, (p, c) in enumerate(rows):
            ids = p + c
            input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention[i, : len(ids)] = 1
            completion[i, len(p) : len(ids)] = 1
        return {"input_ids": input_ids, "attention_mask": attention, "completion_mask": completion}


def to_dense(
    values: torch.Tensor, group_sizes: torch.Tensor, fill: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[N_main, ...]`` flat per-row values -> ``([B, K_max, ...], valid [B, K_max])``.

    Rows of a prompt are contiguous in the collator's order, so this is a scatter by position.
    Padded slots hold ``fill`` and ``valid`` is False there; losses must mask them.
    """
    b, k_max = group_sizes.numel(), int(group_sizes.max()) if group_sizes.numel() else 0
    starts = torch.cumsum(group_sizes, 0) - group_sizes
    position = torch.arange(values.shape[0], device=values.device) - torch.repeat_interleave(
        starts, group_sizes
    )
    group = torch.repeat_interleave(torch.arange(b, device=values.device), group_sizes)
    dense = values.new_full((b, k_max, *values.shape[1:]), fill)
    dense[group, position] = values
    valid = torch.zeros((b, k_max), dtype=torch.bool, device=values.device)
    valid[group, position] = True
    return dense, valid
