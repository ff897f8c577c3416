"""The TOFU evaluation protocols: every way the two reference implementations differ, as fields.

``open-unlearning`` (default) reproduces locuslab/open-unlearning at d3d7cf9, the reference for
published TOFU numbers. ``tofu-orig`` reproduces the original locuslab/tofu code (bdc209e) that
produced the paper's numbers and logs; use it only to compare against those. The differences are
listed in ``shared/design/benchmarks.md`` §2.5 and §5; each field below says which item it covers.
The MUSE protocols live with the MUSE evaluation.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class TofuProtocol:
    """One TOFU evaluation protocol.

    Attributes:
        name: the protocol's name, recorded in every log.
        max_eval_rows: keep only the first N rows of each eval file. orig: 300 (``ds_size: 300``, so
            forget10 and retain_perturbed use 300 of 400 rows and Forget Quality has a different
            floor, §2.2/§5.3). open-unlearning: ``None`` (all rows).
        max_length: token limit of prompt + answer when scoring. orig: 200. open-unlearning: 512 in
            tag mode (chat-template mode is never truncated, see ``truncate_chat``).
        max_length_includes_eos: orig counts the EOS label inside ``max_length`` and drops it when the
            text fills the limit; open-unlearning truncates the text, then appends EOS (§1.1).
        truncate_chat: whether chat-template prompts are truncated to ``max_length``
            (open-unlearning: no).
        max_new_tokens: greedy generation budget for ROUGE. open-unlearning: 200 new tokens.
        generation_max_length: orig's ``max_length=200`` counts the prompt too, so each item gets
            ``200 - len(prompt)`` new tokens (§5.4). ``None`` for open-unlearning.
        answer_tag_in_prompt: open-unlearning puts the assistant tag (``"Answer: "`` of the plain
            format) in the masked prompt and in the generation prompt. orig's phi path did neither:
            the tag's tokens are scored as part of the answer, and the generation prompt ends at
            ``"Question: {q}\\n"`` (§5.5). No effect when the tag is empty (llama2 format, chat).
        boundary: how prompt and answer are tokenised. Both references tokenise ``prompt + answer``
            jointly and mask ``len(ids(prompt))`` tokens (``"joint"``; with byte-level BPE the
            prompt's trailing space merges into the first answer token, which is then not scored).
            ``"separate"`` (TRL's way) scores every answer token; numbers then differ from published ones.
        rouge_use_stemmer: Porter stemming in ``rouge_score`` (on for TOFU in both, §1.3).
        mu_truth_ratio_mean: how the wrong answers are averaged inside the truth ratios that enter
            Model Utility. ``"geometric"`` (open-unlearning, orig ``aggregate_eval_stat.py``) or
            ``"arithmetic"`` (the paper's formula, orig's in-training MU; §2.4.3, §5.1). Forget
            Quality and the forget truth ratio always use the geometric R.
        truth_ratio_form: how each item's ``R = p̄_wrong / p̄_correct`` is computed.
            ``"ou_epsilon"`` (open-unlearning): ``p̄_w / (p̄_c + 1e-10)`` in float64, as its
            ``truth_ratio`` does; it saturates near ``p̄_w·1e10`` when the correct answer's probability
            collapses below ~1e-9, which is where unlearning ends up. ``"exact"`` (tofu-orig, which
            computes ``exp(L_c - mean L_w)``): log space, no epsilon.
        es_floor: Extraction Strength when no suffix of the forget answer is predicted: ``"ou"``
            (open-unlearning's ``1/n``; an answer with no scored token counts as 0) or ``"strict"``
            (0; such an answer is left out). See :mod:`alignkit.eval.memorization`.
        forget_tr_aggregator: aggregate of the forget truth ratio: ``"closer_to_1_better"``
            (``mean min(R, 1/R)``, both references' default) or ``"prob_mean"`` (open-unlearning's
            opt-in ``mean 1/(1+R)``). It does not change Forget Quality.

    Shared by both (not fields): greedy decoding with left padding; generations decoded without
    special tokens, cut at the decoded EOS string and stripped (open-unlearning; orig only decoded,
    which ROUGE cannot tell apart); ROUGE-L recall against the whole answer (open-unlearning removes
    the decoded prompt from the decoded prompt + answer, so no boundary merge can shorten it; see
    ``_Encoder.rouge_reference``); items keyed by row.
    """

    name: str
    max_eval_rows: int | None = None
    max_length: int | None = 512
    max_length_includes_eos: bool = False
    truncate_chat: bool = False
    max_new_tokens: int = 200
    generation_max_length: int | None = None
    answer_tag_in_prompt: bool = True
    boundary: Literal["joint", "separate"] = "joint"
    rouge_use_stemmer: bool = True
    mu_truth_ratio_mean: Literal["geometric", "arithmetic"] = "geometric"
    forget_tr_aggregator: Literal["closer_to_1_better", "prob_mean"] = "closer_to_1_better"
    truth_ratio_form: Literal["ou_epsilon", "exact"] = "ou_epsilon"
    es_floor: Literal["ou", "strict"] = "ou"

    def __post_init__(self):
        if self.es_floor not in ("ou", "strict"):
            raise ValueError(f"`es_floor` must be 'ou' or 'strict', got {self.es_floor!r}")
        if self.truth_ratio_form not in ("ou_epsilon", "exact"):
            raise ValueError(
                f"`truth_ratio_form` must be 'ou_epsilon' or 'exact', got {self.truth_ratio_form!r}"
            )
        if self.boundary not in ("joint", "separate"):
            raise ValueError(f"`boundary` must be 'joint' or 'separate', got {self.boundary!r}")
        if self.mu_truth_ratio_mean not in ("geometric", "arithmetic"):
            raise ValueError(
                f"`mu_truth_ratio_mean` must be 'geometric' or 'arithmetic', got {self.mu_truth_ratio_mean!r}"
            )
        if self.forget_tr_aggregator not in ("closer_to_1_better", "prob_mean"):
            raise ValueError(
                f"`forget_tr_aggregator` must be 'closer_to_1_better' or 'prob_mean', got {self.forget_tr_aggregator!r}"
            )
        if self.max_new_tokens < 1:
            raise ValueError(f"`max_new_tokens` must be >= 1, got {self.max_new_tokens}")
        if self.max_eval_rows is not None and self.max_eval_rows < 1:
            raise ValueError(f"`max_eval_rows` must be >= 1 or None, got {self.max_eval_rows}")

    def replace(self, **changes) -> TofuProtocol:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


OPEN_UNLEARNING = TofuProtocol(name="open-unlearning")

TOFU_ORIG = TofuProtocol(
    name="tofu-orig",
    max_eval_rows=300,
    max_length=200,
    max_length_includes_eos=True,
    truncate_chat=True,
    max_new_tokens=200,
    generation_max_length=200,
    answer_tag_in_prompt=False,
    truth_ratio_form="exact",
)

PROTOCOLS: dict[str, TofuProtocol] = {p.name: p for p in (OPEN_UNLEARNING, TOFU_ORIG)}
# The spelling used in shared/design/benchmarks.md §6.
_ALIASES = {"open_unlearning": "open-unlearning", "tofu_original": "tofu-orig", "tofu_orig": "tofu-orig"}


def get_protocol(protocol: str | TofuProtocol) -> TofuProtocol:
    """A protocol by name (``open-unlearning``, ``tofu-orig``) or the instance itself."""
    if isinstance(protocol, TofuProtocol):
        return protocol
    name = _ALIASES.get(protocol, protocol)
    if name not in PROTOCOLS:
        raise ValueError(
            f"Unknown TOFU protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)} "
            "(the MUSE protocols belong to `alignkit eval muse`)."
        )
    return PROTOCOLS[name]
