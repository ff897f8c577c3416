"""MUSE-News evaluation: VerbMem, KnowMem (forget and retain), PrivLeak, and the MIAs behind it.

Spec: ``shared/design/benchmarks.md`` §3 (MUSE) and §4 (MIA). MUSE is Shi, Lee, Huang et al. 2024,
"MUSE: Machine Unlearning Six-Way Evaluation for Language Models", arXiv:2407.06460; the data are
BBC News articles (see the dataset card of ``muse-bench/MUSE-News`` for terms of use).

Metrics (names and log layout as open-unlearning writes ``MUSE_EVAL.json``):

* ``forget_verbmem_ROUGE`` (C1): ``mean_i ROUGE-L F1(reference_i, greedy continuation_i)`` of the
  ``verbmem/forget`` prompts, 128 new tokens, no template.
* ``forget_knowmem_ROUGE`` (C2) / ``retain_knowmem_ROUGE`` (C4): ``mean_i ROUGE-L F1(answer_i,
  output_i)``; the prompt is 10 few-shot pairs in the plain format
  ``Question: {q}\\nAnswer: {a}\\n\\n`` followed by ``Question: {q}\\nAnswer: ``; 32 new tokens; the
  output is cut before ``"\\n\\n"``, then ``"\\nQuestion"``, then ``"Question:"``.
  Under open-unlearning the reference is the decoded prompt + answer with the decoded prompt
  removed, i.e. the whole answer: OU's output keeps the first answer token even when the prompt's
  trailing space merges into it (see :attr:`MuseProtocol.knowmem_reference`); under muse-orig it
  is the answer string.
* ``extraction_strength`` / ``exact_memorization``: ES and EM (:mod:`alignkit.eval.memorization`) of
  the ``verbmem/forget`` texts, teacher-forced as OU's ``MUSE_forget_verbmem`` set (prompt + " " + gt,
  at most 2048 gt tokens, the last one not counted).
* ``mia_min_k`` (and ``mia_loss``, ``mia_zlib``, ``mia_min_k_plus_plus``, optional ``mia_gradnorm``):
  MIA AUCs of ``privleak/forget`` (members) vs ``privleak/holdout`` (non-members), see
  :mod:`alignkit.eval.mia`.
* ``privleak`` (C3): ``(AUC_MUSE(model) - AUC_MUSE(retrain)) / AUC_MUSE(retrain) * 100`` with
  ``AUC_MUSE = 1 - AUC`` of Min-40% Prob (:func:`alignkit.eval.mia.privleak`). 0 = leaks like the
  retrained model; negative = under-unlearned (the target model is about -100); positive =
  over-unlearned. The retrained model's AUC comes from ``retain_model`` (computed here),
  ``retain_logs`` (a saved ``MUSE_EVAL.json``, alignkit's or open-unlearning's), or, failing both,
  OU's fallback 0.5 with a loud warning.

Two protocols (:data:`MUSE_PROTOCOLS`): ``open-unlearning`` (default, comparable with OU's published
tables) and ``muse-orig`` (the original ``jaechan-repo/muse_bench`` scripts); every difference is a
documented field of :class:`MuseProtocol`. Not reproduced: MUSE-orig ran VerbMem/KnowMem with the
model quantised to 8 bits (LLM.int8) and one prompt at a time; here the model runs in whatever
precision it was loaded in, with batched left-padded greedy decoding.

Layout (the same shape as TOFU): :mod:`~alignkit.eval.muse_data` reads the sets,
:mod:`~alignkit.eval.muse_protocols` holds the protocols, :mod:`~alignkit.eval.muse_metrics` the
prompts, references and logs, this module runs them; the CLI is ``alignkit.commands.eval``.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignkit.data.prompt_format import PromptFormat
from alignkit.eval import mia
from alignkit.eval.loading import load_model, load_tokenizer, model_name
from alignkit.eval.logs import META_KEY
from alignkit.eval.logs import MUSE_EVAL_FILE as EVAL_FILE
from alignkit.eval.logs import MUSE_REPORT_FILE as REPORT_FILE
from alignkit.eval.logs import MUSE_SUMMARY_FILE as SUMMARY_FILE
from alignkit.eval.memorization import memorization_logs
from alignkit.eval.muse_data import DEFAULT_DATA, MuseData, _first_items, load_muse_data
from alignkit.eval.muse_metrics import (
    METRIC_HELP,
    METRIC_ORDER,
    _convert_auc,
    joint_label_reference,
    knowmem_prompt,
    knowmem_reference,
    prompt_removed_reference,
    retain_auc_from_logs,
    rouge_log,
    verbmem_reference,
    verbmem_token_pair,
)
from alignkit.eval.muse_protocols import KNOWMEM_STOP_STRINGS, MUSE_PROTOCOLS, MuseProtocol, get_muse_protocol
from alignkit.eval.progress import StageProgress
from alignkit.eval.scoring import score_token_ids
from alignkit.formatting import format_number

__all__ = [
    "DEFAULT_DATA",
    "EVAL_FILE",
    "KNOWMEM_STOP_STRINGS",
    "METRIC_HELP",
    "METRIC_ORDER",
    "MUSE_PROTOCOLS",
    "REPORT_FILE",
    "SUMMARY_FILE",
    "MuseData",
    "MuseProtocol",
    "MuseResult",
    "evaluate_muse",
    "format_metric",
    "get_muse_protocol",
    "joint_label_reference",
    "knowmem_prompt",
    "knowmem_reference",
    "load_muse_data",
    "prompt_removed_reference",
    "retain_auc_from_logs",
    "rouge_log",
    "verbmem_reference",
]


# --------------------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------------------


@dataclass
class MuseResult:
    """``summary``: ``{metric: value}`` (ROUGE in [0, 1], PrivLeak in %, AUCs in the protocol's
    convention). ``logs``: OU's ``MUSE_EVAL.json`` layout plus run metadata under ``"alignkit"``."""

    summary: dict[str, float | None]
    logs: dict[str, Any]
    protocol: MuseProtocol

    @property
    def meta(self) -> dict:
        return self.logs.get(META_KEY, {})

    def to_markdown(self) -> str:
        meta = self.meta
        lines = [
            "# MUSE evaluation",
            "",
            f"- protocol: `{self.protocol.name}`",
            f"- data: `{meta.get('data')}` (items: {meta.get('n_items')})"
            + (
                f"; first {meta['max_examples']} items only: not comparable with published numbers"
                if meta.get("max_examples")
                else ""
            ),
            f"- PrivLeak reference: {meta.get('privleak_reference', {}).get('source')}"
            f" (retrained-model AUC {format_metric(meta.get('privleak_reference', {}).get('auc'))}, usual convention)",
            f"- Min-K% k = {self.protocol.privleak_k}; AUC convention: {self.protocol.auc_convention} "
            + (
                "(MUSE's: 1 - usual, ~0 when the forget set is recognised); "
                if self.protocol.auc_convention == "muse"
                else "(usual: ~1 when the forget set is recognised, 0.5 when indistinguishable); "
            )
            + f"KnowMem reference: {self.protocol.knowmem_reference}; ROUGE stemmer: {self.protocol.use_stemmer}",
            "",
            "| metric | value | meaning |",
            "|---|---|---|",
        ]
        for name, value in self.summary.items():
            lines.append(f"| {name} | {format_metric(value)} | {METRIC_HELP.get(name, '')} |")
        return "\n".join(lines) + "\n"

    def save(self, output_dir: str | Path) -> Path:
        """Write ``MUSE_EVAL.json`` (full log), ``MUSE_SUMMARY.json`` and ``MUSE_REPORT.md``."""
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / EVAL_FILE).write_text(json.dumps(self.logs, indent=2, ensure_ascii=False), encoding="utf-8")
        (out / SUMMARY_FILE).write_text(json.dumps(self.summary, indent=2), encoding="utf-8")
        (out / REPORT_FILE).write_text(self.to_markdown(), encoding="utf-8")
        return out


def format_metric(value) -> str:
    """MUSE reports' convention: 4 decimals, n/a when missing."""
    return format_number(value, small=None, missing="n/a")


# --------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------


def _generate(model, tokenizer, prompts, *, advance, batch_size, **kwargs) -> list[str]:
    # Greedy, left-padded, OU post-processing (cut at EOS text and stop strings, strip).
    from alignkit.eval.scoring import generate_texts

    return generate_texts(model, tokenizer, list(prompts), batch_size=batch_size, progress=advance, **kwargs)


def evaluate_muse(
    model,
    tokenizer=None,
    *,
    data: str | Path | MuseData = DEFAULT_DATA,
    retain_model=None,
    retain_logs: str | Path | dict | None = None,
    protocol: str | MuseProtocol = "open-unlearning",
    batch_size: int = 8,
    max_examples: int | None = None,
    output_dir: str | Path | None = None,
    progress=True,
    gradnorm: bool = False,
    dtype: str = "auto",
) -> MuseResult:
    """Evaluate ``model`` on MUSE (VerbMem, KnowMem forget/retain, MIAs, PrivLeak).

    Args:
        model: a loaded causal LM or a path / Hub id.
        tokenizer: its tokenizer (loaded from ``model`` when ``None``).
        data: Hub id (``muse-bench/MUSE-News``), a local folder in the muse_bench layout, or a
            :class:`MuseData`.
        retain_model: the retrained (oracle) model (loaded or a path), scored here with the same
            tokenizer and protocol for the PrivLeak reference (MUSE's target and retrained models
            share the Llama-2 tokenizer). Mutually exclusive with ``retain_logs``.
        retain_logs: its saved ``MUSE_EVAL.json`` (path, run folder or dict), alignkit's or
            open-unlearning's.
            Without either, PrivLeak uses AUC 0.5 for the retrained model and warns.
        protocol: ``"open-unlearning"`` (default), ``"muse-orig"`` or a :class:`MuseProtocol`.
        max_examples: keep the first N items of every evaluated set (development runs only; the
            numbers are then not comparable with published ones).
        output_dir: if given, :meth:`MuseResult.save` writes the log and report there.
        progress: ``True`` for a rich progress bar, ``False``/``None`` for none, or a
            ``rich.progress.Progress`` to add tasks to.
        gradnorm: also run the GradNorm MIA (one backward pass per PrivLeak text; slow).
        dtype: dtype when loading from a path (``auto``: bfloat16 on GPU, float32 on CPU).
    """
    if retain_model is not None and retain_logs is not None:
        raise ValueError("Pass either `retain_model` or `retain_logs` for the PrivLeak reference, not both.")
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
    proto = get_muse_protocol(protocol)
    if isinstance(data, MuseData):
        ds = data if max_examples is None else _first_items(data, max_examples)
    else:
        ds = load_muse_data(data, max_examples=max_examples)
    # A retain log is checked before any model runs: a wrong-size log should fail in seconds.
    reference = None
    if retain_logs is not None:
        auc = retain_auc_from_logs(
            retain_logs, n_forget=len(ds.privleak_forget), n_holdout=len(ds.privleak_holdout), protocol=proto
        )
        where = "retain_logs" if isinstance(retain_logs, dict) else f"retain_logs:{retain_logs}"
        reference = (auc, where)
    tokenizer = load_tokenizer(tokenizer, model, who="evaluate_muse")
    model = load_model(model, dtype)
    if retain_model is not None:
        retain_model = load_model(retain_model, dtype)
    was_training = model.training
    model.eval()
    try:
        with StageProgress(progress) as bar:
            logs = _run(model, tokenizer, ds, proto, retain_model, reference, batch_size, bar, gradnorm)
    finally:
        model.train(was_training)
    logs[META_KEY] = {
        "benchmark": "MUSE",
        "data": str(data) if not isinstance(data, MuseData) else "MuseData",
        "sources": ds.sources,
        "n_items": ds.sizes(),
        "max_examples": max_examples,
        "protocol": proto.to_dict(),
        "knowmem_prompt_format": PromptFormat.preset("plain").to_dict(),
        "model": model_name(model),
        "tokenizer": getattr(tokenizer, "name_or_path", None),
        "privleak_reference": logs.pop("_privleak_reference"),
    }
    summary = {name: logs[name]["agg_value"] for name in METRIC_ORDER if name in logs}
    result = MuseResult(summary=summary, logs=logs, protocol=proto)
    if output_dir is not None:
        result.save(output_dir)
    return result


def _warn_if_truncated(tokenizer, prompts: Sequence[str], max_length: int | None, name: str) -> None:
    if max_length is None:
        return
    n_long = sum(len(tokenizer(p, add_special_tokens=True)["input_ids"]) >= max_length for p in prompts)
    if n_long:
        message = (
            f"{name}: {n_long} of {len(prompts)} few-shot prompts have >= {max_length} tokens, the protocol's "
            "limit. They are truncated from the right as open-unlearning does, which cuts off the final "
            "question and empties the reference; those items score 0. With Llama-2's tokenizer the MUSE "
            "prompts have 350-450 tokens."
        )
        warnings.warn(message, stacklevel=4)


def _run(
    model, tokenizer, ds: MuseData, proto: MuseProtocol, retain_model, reference, batch_size, bar, gradnorm
):
    logs: dict[str, Any] = {}

    # KnowMem (C2 forget, C4 retain): few-shot plain prompts, 32 greedy tokens, stop strings.
    for name, rows, shots in (
        ("forget_knowmem_ROUGE", ds.knowmem_forget, ds.knowmem_forget_icl),
        ("retain_knowmem_ROUGE", ds.knowmem_retain, ds.knowmem_retain_icl),
    ):
        prompts = [knowmem_prompt(tokenizer, r["question"], shots) for r in rows]
        _warn_if_truncated(tokenizer, prompts, proto.knowmem_max_length, name)
        gens = _generate(
            model,
            tokenizer,
            prompts,
            advance=bar.stage(name.replace("_ROUGE", ""), len(prompts)),
            batch_size=batch_size,
            max_new_tokens=proto.knowmem_max_new_tokens,
            stop_strings=proto.knowmem_stop_strings,
            max_length=proto.knowmem_max_length,
        )
        refs = [knowmem_reference(tokenizer, p, r["answer"], proto) for p, r in zip(prompts, rows)]
        logs[name] = rouge_log(refs, gens, prompts, use_stemmer=proto.use_stemmer, key=proto.rouge_key)

    # VerbMem (C1): the stored prompt, no template, 128 greedy tokens.
    prompts = [r["prompt"] for r in ds.verbmem_forget]
    gens = _generate(
        model,
        tokenizer,
        prompts,
        advance=bar.stage("forget_verbmem", len(prompts)),
        batch_size=batch_size,
        max_new_tokens=proto.verbmem_max_new_tokens,
    )
    refs = [verbmem_reference(tokenizer, r["prompt"], r["gt"], proto) for r in ds.verbmem_forget]
    logs["forget_verbmem_ROUGE"] = rouge_log(
        refs, gens, prompts, use_stemmer=proto.use_stemmer, key=proto.rouge_key
    )

    # Extraction Strength / Exact Memorisation: the VerbMem forget texts, teacher-forced (one forward each).
    pairs = [
        verbmem_token_pair(tokenizer, r["prompt"], r["gt"], max_tokens=proto.verbmem_max_length)
        for r in ds.verbmem_forget
    ]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    scored = score_token_ids(
        model,
        pairs,
        pad_token_id=pad,
        batch_size=batch_size,
        progress=bar.stage("forget_verbmem: ES/EM", len(pairs)),
        argmax=True,
    )
    logs.update(memorization_logs({str(i): s for i, s in enumerate(scored)}, floor=proto.es_floor))

    # MIAs on privleak forget vs holdout (C3).
    mia_kwargs = dict(
        k=proto.privleak_k,
        min_k_rule=proto.min_k_count,
        max_tokens=proto.privleak_max_tokens,
        drop_last_token=proto.drop_last_token,
        batch_size=batch_size,
    )
    n_texts = len(ds.privleak_forget) + len(ds.privleak_holdout)
    attacks = ["loss", "zlib", "min_k", "min_k_plus_plus"] + (["gradnorm"] if gradnorm else [])
    mia_logs = mia.run_mia(
        model,
        tokenizer,
        ds.privleak_forget,
        ds.privleak_holdout,
        attacks=attacks,
        progress=bar.stage("privleak MIA", n_texts * (2 if gradnorm else 1)),
        **mia_kwargs,
    )
    auc_model = mia_logs["mia_min_k"]["agg_value"]

    if retain_model is not None:
        was_training = retain_model.training
        retain_model.eval()
        try:
            ret = mia.run_mia(
                retain_model,
                tokenizer,
                ds.privleak_forget,
                ds.privleak_holdout,
                attacks=["min_k"],
                progress=bar.stage("privleak MIA (retrained model)", n_texts),
                **mia_kwargs,
            )
        finally:
            retain_model.train(was_training)
        auc_ret, source = ret["mia_min_k"]["agg_value"], "retain_model"
    elif reference is not None:
        auc_ret, source = reference  # from retain logs, checked by evaluate_muse
    else:
        auc_ret, source = 0.5, "default_0.5"
        message = (
            "PrivLeak: no retrained model and no retain logs given, so the retrained model's Min-K% AUC is "
            "taken as 0.5 (open-unlearning's fallback). A real retrained model's AUC is generally not 0.5: "
            "pass `retain_model`/--retain-model or `retain_logs`/--retain-logs for a meaningful PrivLeak."
        )
        warnings.warn(message, stacklevel=3)

    pl = mia.privleak(auc_model, auc_ret, eps=proto.privleak_eps)
    for entry in mia_logs.values():  # report every AUC in the protocol's convention
        for key in ("agg_value", "auc"):
            entry[key] = _convert_auc(entry[key], proto.auc_convention)
        entry["auc_convention"] = proto.auc_convention
    logs.update(mia_logs)
    logs["privleak"] = {
        "agg_value": pl,
        "auc_muse": 1.0 - auc_model,
        "ref_auc_muse": 1.0 - auc_ret,
        "ref_source": source,
    }
    logs["_privleak_reference"] = {"source": source, "auc": auc_ret, "auc_convention": "usual"}
    return logs
