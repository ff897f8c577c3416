"""The MUSE evaluation protocols: every way open-unlearning and the original MUSE code differ, as fields.

Spec: ``shared/design/benchmarks.md`` §3.4. ``open-unlearning`` (default) is comparable with
open-unlearning's published tables; ``muse-orig`` reproduces the original ``jaechan-repo/muse_bench``
scripts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from alignkit.eval import mia

KNOWMEM_STOP_STRINGS = ("\n\n", "\nQuestion", "Question:")


# --------------------------------------------------------------------------------------------------
# Protocols
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MuseProtocol:
    """Every setting on which open-unlearning (OU) and the original MUSE code (MUSE-orig) differ.

    Spec §3.4. Build a variant with ``dataclasses.replace(MUSE_PROTOCOLS["open-unlearning"], ...)``
    (results are then comparable with neither reference; the log records every field).

    The retrained model's AUC for PrivLeak is an input, not a protocol setting: MUSE-orig computed
    it, OU reads it from the retrained model's logs and falls back to 0.5. Both ways are offered
    (``retain_model`` / ``retain_logs``); the 0.5 fallback always warns.
    """

    name: str
    use_stemmer: bool
    """ROUGE Porter stemmer (``rouge_score`` ``use_stemmer``): OU on, MUSE-orig off."""
    rouge_key: Literal["rougeL_f1"] = "rougeL_f1"
    """The per-item value averaged into the ROUGE metrics. ROUGE-L **F1** in both protocols (OU
    ``rougeL_f1``, MUSE-orig ``mean_rougeL``); only TOFU reports recall."""
    knowmem_max_new_tokens: int = 32
    """Greedy budget for KnowMem answers (both: 32)."""
    knowmem_stop_strings: tuple[str, ...] = KNOWMEM_STOP_STRINGS
    """Output cut before the first occurrence of each, in order (both; OU also stops decoding there)."""
    knowmem_max_length: int | None = 512
    """Token limit of the KnowMem prompt (+ answer, for the reference): OU's tag-mode truncation 512;
    MUSE-orig none."""
    knowmem_reference: Literal["prompt_removed", "answer"] = "prompt_removed"
    """KnowMem reference text. ``prompt_removed`` (OU): ``decode(ids(prompt + answer))`` with
    ``decode(ids(prompt))`` removed, stripped, both cut to ``knowmem_max_length`` ids (OU keeps the
    whole conversation as the generation labels and ``eval_text_similarity`` removes the prompt's
    text): the whole answer, even where the prompt's trailing space merges into the first answer
    token (which slicing the joint ids at ``len(ids(prompt))`` would lose). ``answer`` (MUSE-orig):
    the answer string as stored."""
    verbmem_max_new_tokens: int = 128
    """Greedy budget for VerbMem continuations (both: 128)."""
    verbmem_reference: Literal["joint_labels", "gt_truncated"] = "joint_labels"
    """VerbMem reference text. ``joint_labels`` (OU): the full ``gt``, taken as the decoded ids of
    ``prompt + " " + gt`` after ``len(tokenize(prompt))`` (``insert_space: True``), at most
    ``verbmem_max_length`` tokens, stripped. ``gt_truncated`` (MUSE-orig):
    ``decode(tokenize(gt, add_special_tokens=True)[:verbmem_max_new_tokens])``, i.e. 127 gt tokens
    when the tokenizer adds a BOS."""
    verbmem_max_length: int | None = 2048
    """OU's cap on the reference tokens (``max_length: 2048``); unused by ``gt_truncated``."""
    privleak_k: float = 0.4
    """Min-K% fraction ("Min-40%"; both MUSE and OU's MUSE configs; the Min-K% paper's usual 0.2 is
    *not* what MUSE uses)."""
    privleak_max_tokens: int | None = 2048
    """Text tokens scored per PrivLeak window after the BOS: OU 2048, MUSE-orig the whole window."""
    drop_last_token: bool = True
    """OU's token-wise log-prob helper drops the last scored token (it assumes EOS, which raw text
    lacks, so a real token is lost; §5 item 10). Applies to Min-K% and Min-K%++. MUSE-orig: False."""
    min_k_count: mia.MinKCount = "at_least_one"
    """``at_least_one`` (OU): ``max(1, floor(k n))`` tokens; ``floor`` (MUSE-orig): ``floor(k n)``."""
    auc_convention: Literal["usual", "muse"] = "usual"
    """How MIA AUCs are reported. ``usual`` (OU): forget = members = recognised -> AUC near 1 for the
    target model. ``muse`` (MUSE-orig): ``1 - usual`` (forget labelled 0, holdout 1, score MinK),
    near 0 for the target model. PrivLeak is the same number either way."""
    privleak_eps: float = 1e-10
    """Added to PrivLeak's denominator: OU 1e-10, MUSE-orig 0."""
    es_floor: Literal["ou", "strict"] = "ou"
    """Extraction Strength (on the VerbMem forget texts, teacher-forced) when no suffix is predicted:
    OU's ``1/n`` or ``strict`` 0 (:mod:`alignkit.eval.memorization`). MUSE-orig has no ES/EM; alignkit
    logs them under both protocols with this floor."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


MUSE_PROTOCOLS: dict[str, MuseProtocol] = {
    "open-unlearning": MuseProtocol(name="open-unlearning", use_stemmer=True),
    "muse-orig": MuseProtocol(
        name="muse-orig",
        use_stemmer=False,
        knowmem_max_length=None,
        knowmem_reference="answer",
        verbmem_reference="gt_truncated",
        verbmem_max_length=None,
        privleak_max_tokens=None,
        drop_last_token=False,
        min_k_count="floor",
        auc_convention="muse",
        privleak_eps=0.0,
    ),
}
_PROTOCOL_ALIASES = {
    "open_unlearning": "open-unlearning",
    "ou": "open-unlearning",
    "muse_orig": "muse-orig",
    "muse-original": "muse-orig",
    "muse_original": "muse-orig",
}


def get_muse_protocol(protocol: str | MuseProtocol) -> MuseProtocol:
    """A :class:`MuseProtocol` by name (``open-unlearning`` or ``muse-orig``) or as given."""
    if isinstance(protocol, MuseProtocol):
        return protocol
    key = _PROTOCOL_ALIASES.get(protocol, protocol)
    if key not in MUSE_PROTOCOLS:
        raise ValueError(f"Unknown MUSE protocol {protocol!r}; choose one of {', '.join(MUSE_PROTOCOLS)}.")
    return MUSE_PROTOCOLS[key]
