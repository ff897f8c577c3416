"""What MUSE measures: the KnowMem/VerbMem prompts and references, their ROUGE logs, and the
retrained model's Min-K% AUC that PrivLeak is relative to.

Spec: ``shared/design/benchmarks.md`` §3; the metric definitions are in :mod:`alignkit.eval.muse`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path

from alignkit.data.prompt_format import PromptFormat
from alignkit.data.tokenize import encode_prompt_completion
from alignkit.eval.logs import META_KEY, read_log
from alignkit.eval.logs import MUSE_EVAL_FILE as EVAL_FILE
from alignkit.eval.metrics import rouge
from alignkit.eval.muse_protocols import MuseProtocol

METRIC_ORDER = (
    "forget_knowmem_ROUGE",
    "forget_verbmem_ROUGE",
    "retain_knowmem_ROUGE",
    "privleak",
    "mia_min_k",
    "mia_min_k_plus_plus",
    "mia_loss",
    "mia_zlib",
    "mia_gradnorm",
    "extraction_strength",
    "exact_memorization",
)
# What a good value looks like, for the report (spec §3.1).
METRIC_HELP = {
    "forget_knowmem_ROUGE": "ROUGE-L F1 of few-shot QA on forget_qa (C2); low, near the retrained model",
    "forget_verbmem_ROUGE": "ROUGE-L F1 of 128-token continuations of forget text (C1); low, near the retrained model",
    "retain_knowmem_ROUGE": "ROUGE-L F1 of few-shot QA on retain_qa (C4); high, near the target model",
    "privleak": "relative Min-K% AUC gap to the retrained model, % (C3); ~0, negative = under-unlearned",
    "mia_min_k": "Min-K% Prob AUC, forget vs holdout",
    "mia_min_k_plus_plus": "Min-K%++ AUC, forget vs holdout",
    "mia_loss": "LOSS attack AUC, forget vs holdout",
    "mia_zlib": "ZLib attack AUC, forget vs holdout",
    "mia_gradnorm": "GradNorm attack AUC, forget vs holdout",
    "extraction_strength": "Extraction Strength of the VerbMem forget texts (teacher-forced); low after unlearning",
    "exact_memorization": "Exact Memorization of the VerbMem forget texts (teacher-forced); low after unlearning",
}


# --------------------------------------------------------------------------------------------------
# Prompts, references, ROUGE
# --------------------------------------------------------------------------------------------------


def knowmem_prompt(tokenizer, question: str, fewshot: Sequence[dict]) -> str:
    """The KnowMem prompt: always the plain format (``Question: {q}\\nAnswer: {a}\\n\\n`` per shot)."""
    return PromptFormat.preset("plain").render_prompt(
        tokenizer, question, fewshot=[(s["question"], s["answer"]) for s in fewshot]
    )


def _decode(tokenizer, ids: Sequence[int]) -> str:
    # Both references decode with clean_up_tokenization_spaces=True; transformers 5 ignores it for
    # BPE tokenizers (with a warning), and it only moves spaces around punctuation, which ROUGE's
    # tokenizer drops anyway, so the tokenizer's own default is used.
    return tokenizer.decode(list(ids), skip_special_tokens=True)


def joint_label_reference(tokenizer, prompt: str, completion: str, *, max_length: int | None) -> str:
    """OU's VerbMem reference: decoded labels of the jointly tokenized ``prompt + completion``.

    ``ids(prompt + completion)[len(ids(prompt)):]``, truncated so the whole sequence has at most
    ``max_length`` ids, decoded without special tokens; OU then removes the decoded prompt text if
    it occurs and strips (``eval_text_similarity``). VerbMem's completion is ``" " + gt`` after a
    prompt without a trailing space, so no gt token straddles the boundary; QA references
    (KnowMem) use :func:`prompt_removed_reference`.
    """
    prompt_ids, completion_ids = encode_prompt_completion(
        tokenizer, prompt, completion, boundary="joint", add_eos=False, add_special_tokens=True
    )
    if max_length is not None:
        completion_ids = completion_ids[: max(max_length - len(prompt_ids), 0)]
    return _decode(tokenizer, completion_ids).replace(_decode(tokenizer, prompt_ids), "").strip()


def prompt_removed_reference(tokenizer, prompt: str, answer: str, *, max_length: int | None) -> str:
    """OU's reference for a QA item: ``decode(ids(prompt + answer))`` minus ``decode(ids(prompt))``, stripped.

    Both are tokenised alone and cut to ``max_length`` ids, as OU's ``preprocess_chat_instance`` does in
    ``predict_with_generate`` mode (the labels are the whole conversation, the input the prompt); its
    ``eval_text_similarity`` then removes every occurrence of the decoded input from the decoded labels.
    The result is the whole answer even when the prompt's trailing space merges into its first token.
    """

    def ids(text: str) -> list[int]:
        out = list(tokenizer(text, add_special_tokens=True)["input_ids"])
        return out[:max_length] if max_length is not None else out

    return _decode(tokenizer, ids(prompt + answer)).replace(_decode(tokenizer, ids(prompt)), "").strip()


def knowmem_reference(tokenizer, prompt: str, answer: str, protocol: MuseProtocol) -> str:
    """KnowMem reference under ``protocol.knowmem_reference`` (see :class:`MuseProtocol`)."""
    if protocol.knowmem_reference == "answer":
        return answer
    return prompt_removed_reference(tokenizer, prompt, answer, max_length=protocol.knowmem_max_length)


def verbmem_reference(tokenizer, prompt: str, gt: str, protocol: MuseProtocol) -> str:
    """VerbMem reference under ``protocol.verbmem_reference`` (see :class:`MuseProtocol`)."""
    if protocol.verbmem_reference == "gt_truncated":
        ids = tokenizer(gt, add_special_tokens=True)["input_ids"][: protocol.verbmem_max_new_tokens]
        return _decode(tokenizer, ids)
    if protocol.verbmem_max_length is None:
        max_length = None
    else:  # OU caps the *content* at max_length tokens after the prompt ids.
        max_length = (
            len(tokenizer(prompt, add_special_tokens=True)["input_ids"]) + protocol.verbmem_max_length
        )
    return joint_label_reference(tokenizer, prompt, " " + gt, max_length=max_length)


def verbmem_token_pair(
    tokenizer, prompt: str, gt: str, *, max_tokens: int | None
) -> tuple[list[int], list[int]]:
    """``(prompt_ids, gt_ids)`` teacher-forced for ES/EM, as OU's ``MUSE_forget_verbmem`` set: ``prompt``
    and ``gt`` joined with one space and tokenised together (BOS, no EOS), ``gt`` cut to ``max_tokens``."""
    prompt_ids, gt_ids = encode_prompt_completion(
        tokenizer, prompt, " " + gt, boundary="joint", add_eos=False, add_special_tokens=True
    )
    return prompt_ids, gt_ids[:max_tokens] if max_tokens is not None else gt_ids


def rouge_log(
    references: Sequence[str],
    generations: Sequence[str],
    inputs: Sequence[str],
    *,
    use_stemmer: bool,
    key: str = "rougeL_f1",
) -> dict:
    """OU's ROUGE metric entry: ``agg_value = mean_i value_i[key]`` plus per-item values and texts."""
    if not len(references) == len(generations) == len(inputs):
        raise ValueError(
            f"rouge_log: {len(references)} references, {len(generations)} generations, {len(inputs)} inputs."
        )
    index = [str(i) for i in range(len(references))]
    return rouge(
        dict(zip(index, generations)),
        dict(zip(index, references)),
        rouge_type=key,
        use_stemmer=use_stemmer,
        inputs=dict(zip(index, inputs)),
    )


# --------------------------------------------------------------------------------------------------
# Retain-model reference for PrivLeak
# --------------------------------------------------------------------------------------------------


def _convert_auc(auc_value: float, convention: str) -> float:
    """Usual <-> MUSE AUC convention (``AUC_MUSE = 1 - AUC``, its own inverse); identity for usual."""
    return 1.0 - auc_value if convention == "muse" else auc_value


def retain_auc_from_logs(
    retain_logs: str | Path | dict, *, n_forget: int, n_holdout: int, protocol: MuseProtocol
) -> float:
    """The retrained model's Min-K% AUC (usual convention) from its eval log, after checks.

    Reads ``mia_min_k.agg_value`` from alignkit's or open-unlearning's ``MUSE_EVAL.json`` (a path, the
    run folder holding it, or the loaded dict). Refuses a
    log whose ``forget``/``holdout`` item counts differ from this run (e.g. a full 100-item log
    against a ``max_examples`` run) or whose recorded ``k``/protocol differ.
    """
    where = "retain_logs"
    if not isinstance(retain_logs, dict):
        path = Path(retain_logs)
        where = str(path / EVAL_FILE if path.is_dir() else path)
        retain_logs = read_log(path, file_name=EVAL_FILE, what="Retain-model log")
    if not isinstance(retain_logs, dict):
        raise ValueError(f"{where}: expected a JSON object of metrics, got a {type(retain_logs).__name__}.")
    entry = retain_logs.get("mia_min_k")
    if not isinstance(entry, dict) or not isinstance(entry.get("agg_value"), (int, float)):
        raise ValueError(
            f"{where}: no numeric 'mia_min_k.agg_value' (top-level keys: {sorted(retain_logs)[:12]}). PrivLeak "
            "needs the retrained model's Min-K% AUC: pass the MUSE_EVAL.json written by `alignkit eval muse` "
            "or open-unlearning for that model, or pass `retain_model`."
        )
    value = float(entry["agg_value"])
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{where}: mia_min_k.agg_value = {value} is not an AUC in [0, 1].")
    for split, n in (("forget", n_forget), ("holdout", n_holdout)):
        items = entry.get(split, {}).get("value_by_index") if isinstance(entry.get(split), dict) else None
        if items is None:
            warnings.warn(
                f"{where}: mia_min_k has no per-item {split} scores; cannot check it covers the same {n} items.",
                stacklevel=3,
            )
        elif len(items) != n:
            raise ValueError(
                f"{where}: mia_min_k.{split} has {len(items)} items but this run scores {n} privleak/{split} "
                "texts. The retrained model's AUC must come from the same items: rerun it with the same "
                "data and --max-examples."
            )
    if "k" in entry and not math.isclose(float(entry["k"]), protocol.privleak_k):
        raise ValueError(
            f"{where}: mia_min_k was computed with k={entry['k']}, this run uses k={protocol.privleak_k}."
        )
    meta = retain_logs.get(META_KEY)
    if isinstance(meta, dict) and isinstance(meta.get("protocol"), dict):
        theirs = meta["protocol"]
        mine = protocol.to_dict()
        keys = ("privleak_k", "privleak_max_tokens", "drop_last_token", "min_k_count")
        diff = {k: (theirs.get(k), mine[k]) for k in keys if k in theirs and theirs[k] != mine[k]}
        if diff:
            raise ValueError(
                f"{where}: computed under different PrivLeak settings (theirs, this run): {diff}."
            )
    return _convert_auc(value, entry.get("auc_convention", "usual"))
