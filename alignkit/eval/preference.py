"""Preference evaluation: ranking accuracy, idealized ranking accuracy, reward accuracy, task scores.

Definitions (``shared/design/methods-alignment.md`` §6.1, after Chen et al., arXiv 2405.19534):

* **ranking accuracy** ``R = mean 1[lp(y_w) >= lp(y_l)]`` over every strictly ordered pair, from the
  *policy* likelihood (ties count as correct); ``R~`` uses ``lp/|y|``. A pair whose rater share is
  ``alpha = 0.5`` is correct iff ``|pi(y_w) - pi(y_l)| < 0.01`` in probability space (App. C.1).
  For lists, ``list_exact_match`` is 1 when the likelihood order equals the label order (App. A.6);
  for 1-vs-N rows, ``top1_likelihood_accuracy`` is 1 when the chosen item is strictly the most likely
  candidate (S-DPO's HitRatio@1, read from the likelihood instead of a generation).
* **idealized ranking accuracy** ``R* = mean 1[(lr_w - lr_l) + (1/beta) log(alpha/(1-alpha)) > 0]``
  (Thm 3.1; ``1 - alpha = 0`` is replaced by 0.001 as the official code does), reported as
  min / median / max over beta in {0.01, 0.1, 1, 5, 10}; it needs a reference model. ``alpha`` is
  the row's ``alpha`` field (the share of raters preferring ``chosen``), 1 when absent.
* **reward accuracy / margin** (TRL's ``rewards/accuracies``): ``1[beta*r_w > beta*r_l]`` (strict)
  and the mean ``beta*(r_w - r_l)``, ``r = lp - lr``; **difficulty threshold** (Thm 4.1)
  ``softplus(-beta*(lr_l - lr_w))`` per pair.
* on the synthetic tasks (:mod:`alignkit.data.synthetic.preference`), from greedy generations or the
  policy's ordering: **HitRatio@1** (recommendation: the generation names the true next title),
  **Kendall tau** and **NDCG** of the likelihood order against the graded labels (graded lists),
  **flagged rate** (safety); for every task the exact **generation score** of greedy generations
  and the share of well-formed ones (``PreferenceTask.well_formed``).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from alignkit.data.records import normalize_record
from alignkit.errors import UserError

IDEALIZED_BETAS = (0.01, 0.1, 1.0, 5.0, 10.0)
TIE_PROB = 0.01  # App. C.1: a tied pair is correct when the probabilities differ by less than this


# ----------------------------------------------------------------------------------- pure metrics


def ranking_accuracy(
    lp_w: torch.Tensor, lp_l: torch.Tensor, alpha: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-pair correctness ``1[lp_w >= lp_l]`` (ties correct); pairs with ``alpha == 0.5`` use the tie rule."""
    correct = (lp_w >= lp_l).double()
    if alpha is not None:
        tie = (torch.exp(lp_w.double()) - torch.exp(lp_l.double())).abs() < TIE_PROB
        correct = torch.where(alpha == 0.5, tie.double(), correct)
    return correct


def idealized_log_values(
    lr_w: torch.Tensor, lr_l: torch.Tensor, alpha: torch.Tensor, beta: float
) -> torch.Tensor:
    """``(lr_w - lr_l) + (1/beta)(log alpha - log(1 - alpha))``, with ``1 - alpha = 0`` read as 0.001."""
    alpha = alpha.double()
    loser = torch.where(alpha >= 1.0, torch.full_like(alpha, 0.001), 1.0 - alpha)
    return (lr_w.double() - lr_l.double()) + (torch.log(alpha) - torch.log(loser)) / beta


def idealized_ranking_accuracy(
    lr_w: torch.Tensor, lr_l: torch.Tensor, alpha: torch.Tensor, betas: Sequence[float] = IDEALIZED_BETAS
) -> dict[str, float]:
    """``R*`` per beta (strict ``> 0``) and its min / median / max over ``betas``."""
    per_beta = {b: float((idealized_log_values(lr_w, lr_l, alpha, b) > 0).double().mean()) for b in betas}
    values = list(per_beta.values())
    return {
        "per_beta": per_beta,
        "min": min(values),
        "median": statistics.median(values),
        "max": max(values),
    }


def difficulty_thresholds(lr_w: torch.Tensor, lr_l: torch.Tensor, beta: float) -> torch.Tensor:
    """Thm 4.1: the pair is ranked correctly iff the DPO loss is at most ``softplus(-beta*(lr_l - lr_w))``."""
    return F.softplus(-beta * (lr_l.double() - lr_w.double()))


def ndcg(scores: Sequence[float], labels: Sequence[float]) -> float:
    """NDCG of the order given by ``scores`` (descending; ties by index) against graded ``labels``.

    Gain ``2^label - 1``, discount ``log2(1 + position)``, divided by the ideal DCG (1.0 when every
    gain is 0). Written here rather than ``sklearn.metrics.ndcg_score``, whose gain is the label
    itself (linear), not LiPO's exponential gain.
    """
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    ideal = sorted(labels, reverse=True)

    def dcg(values):
        return sum((2.0**v - 1.0) / math.log2(2 + p) for p, v in enumerate(values))

    best = dcg(ideal)
    return dcg([labels[i] for i in order]) / best if best > 0 else 1.0


def kendall_tau(scores: Sequence[float], labels: Sequence[float]) -> float:
    """Kendall's tau-b between the policy's scores and the labels (scipy; NaN when either is constant)."""
    from scipy.stats import kendalltau

    return float(kendalltau(scores, labels).statistic)


# ----------------------------------------------------------------------------------- evaluation


@dataclass
class PreferenceResult:
    """Aggregates (``summary``) and per-row values (``rows``), as written to PREFERENCE_EVAL.json."""

    summary: dict
    rows: list[dict] = field(default_factory=list)

    def save(self, output_dir: str | Path) -> dict[str, Path]:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"log": out / "PREFERENCE_EVAL.json", "summary": out / "PREFERENCE_SUMMARY.json"}
        paths["log"].write_text(json.dumps({"summary": self.summary, "rows": self.rows}, indent=1))
        paths["summary"].write_text(json.dumps(self.summary, indent=2))
        plot = out / "ranking_accuracy.png"
        if _plot(self, plot):
            paths["plot"] = plot
        return paths


def _pairs(record) -> list[tuple[int, int]]:
    """Strictly ordered (winner, loser) index pairs of a record."""
    k = len(record.completions)
    if record.score_kind is None:
        if "chosen" not in record.roles:
            return []
        return [(0, j) for j in range(1, k)]
    s = record.scores
    better = (lambda a, b: a < b) if record.score_kind == "ranks" else (lambda a, b: a > b)
    return [(a, b) for a in range(k) for b in range(k) if better(s[a], s[b])]


def _label_values(record) -> list[float] | None:
    """Higher-is-better values for NDCG / Kendall tau (ranks are negated; labels/scores as given)."""
    if record.score_kind is None:
        return None
    return [-v for v in record.scores] if record.score_kind == "ranks" else list(record.scores)


def _as_text(record, tokenizer) -> tuple[str, list[str]]:
    """A conversational record as (prompt text, completion texts), rendered by the chat template as
    the collator renders it for training; a plain record as it is."""
    if not record.conversational:
        return record.prompt, list(record.completions)
    from alignkit.data.prompt_format import PromptFormat

    fmt = PromptFormat.for_tokenizer(tokenizer)
    prompt = fmt.render_messages(tokenizer, record.prompt, add_generation_prompt=True)
    full = [
        fmt.render_messages(tokenizer, record.prompt + c, add_generation_prompt=False)
        for c in record.completions
    ]
    return prompt, [text[len(prompt) :] if text.startswith(prompt) else text for text in full]


def _score_rows(model, tokenizer, records, batch_size, progress, what):
    from alignkit.eval.scoring import score_texts

    texts = [_as_text(r, tokenizer) for r in records]
    prompts = [p for (p, comps) in texts for _ in comps]
    targets = [c for _, comps in texts for c in comps]
    chat = [r.conversational for r in records for _ in r.completions]
    scored = [None] * len(targets)
    bar = progress(what, len(targets))
    for conversational in (False, True):  # chat-template text already holds its special tokens
        idx = [i for i, c in enumerate(chat) if c == conversational]
        if not idx:
            continue
        out = score_texts(
            model,
            tokenizer,
            [prompts[i] for i in idx],
            [targets[i] for i in idx],
            batch_size=batch_size,
            add_special_tokens=not conversational,  # EOS is appended to every answer, as in training
            progress=bar,
        )
        for i, item in zip(idx, out, strict=True):
            scored[i] = item
    logps = [float(s.token_logps.double().sum()) for s in scored]
    lengths = [len(s.target_ids) for s in scored]
    out, start = [], 0
    for r in records:
        k = len(r.completions)
        out.append((logps[start : start + k], lengths[start : start + k]))
        start += k
    return out


def evaluate_preference(
    model,
    rows: Sequence[dict],
    *,
    tokenizer=None,
    ref_model=None,
    beta: float = 0.1,
    task=None,
    batch_size: int = 16,
    max_new_tokens: int = 24,
    progress=True,
    judge=None,
    judge_protocol: str = "pairwise",
    judge_max_new_tokens: int = 128,
    verifier=None,
) -> PreferenceResult:
    """Evaluate ``model`` (path or model) on preference ``rows`` of any shape the collator accepts.

    ``ref_model`` adds reward accuracy / margins and the idealized ranking accuracy. ``task``: a
    :class:`~alignkit.data.synthetic.preference.PreferenceTask` whose records are ``rows``, for the
    exact task metrics (greedy generations for recommendation and safety). ``judge`` (a
    :class:`~alignkit.eval.judge.Judge`, a callable or a ``python:``/``reward:``/``chat:`` spec) adds
    the win rate of the model's greedy answers against ``ref_model``'s under ``judge_protocol``
    (:mod:`alignkit.eval.judge`). ``verifier`` (a callable ``(row, completion) -> label`` or a name, :mod:`alignkit.data.verifiers`) adds ``answer_accuracy``:
    the share of rows whose greedy generation the verifier accepts (AFT's task accuracy).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignkit.eval.progress import StageProgress

    if isinstance(model, (str, Path)):
        tokenizer = tokenizer or AutoTokenizer.from_pretrained(model)
        model = AutoModelForCausalLM.from_pretrained(model)
    if isinstance(ref_model, (str, Path)):
        ref_model = AutoModelForCausalLM.from_pretrained(ref_model)
    if tokenizer is None:
        raise ValueError("evaluate_preference: pass `tokenizer` when `model` is an in-memory model.")
    records = [normalize_record(dict(r), index=i, source="eval rows") for i, r in enumerate(rows)]
    if task is None and judge is None and verifier is None and not any(_pairs(r) for r in records):
        raise UserError(
            f"the {len(records)} eval rows hold no ordered pair of completions (no chosen/rejected, scores, "
            "ranks or labels), so there is nothing to rank; question/answer rows are evaluated with "
            "`alignkit eval tofu`. Give preference rows (see README: Every shape of data)."
        )
    if judge is not None:
        from alignkit.eval.judge import load_judge

        if ref_model is None:
            raise ValueError("evaluate_preference: a judge's win rate compares against `ref_model`; pass it.")
        judge = load_judge(judge, judge_protocol)
    judged = answers = None
    with StageProgress(progress) as bars:

        def stage(what, total):
            return bars.stage(what, total)

        policy = _score_rows(model, tokenizer, records, batch_size, stage, "policy log-probs")
        reference = (
            _score_rows(ref_model, tokenizer, records, batch_size, stage, "reference log-probs")
            if ref_model is not None
            else None
        )
        generations = None
        if task is not None:
            from alignkit.eval.scoring import generate_texts

            generations = generate_texts(
                model,
                tokenizer,
                [r.prompt for r in records],
                max_new_tokens=max_new_tokens,
                stop_strings=["\n"],
                batch_size=batch_size,
                progress=stage("greedy generations", len(records)),
            )
        if judge is not None:
            from alignkit.eval.judge import judge_generations

            judged = judge_generations(
                model,
                ref_model,
                tokenizer,
                records,
                judge,
                protocol=judge_protocol,
                max_new_tokens=judge_max_new_tokens,
                batch_size=batch_size,
                stage=stage,
            )
        if verifier is not None:
            answers = _answer_accuracy(
                model, tokenizer, records, rows, verifier, max_new_tokens, batch_size, stage
            )
    result = _aggregate(records, rows, policy, reference, generations, task, beta)
    result.summary.update(_assessment_accuracy(records, policy))
    if answers is not None:
        result.summary["answer_accuracy"] = answers
    if judged is not None:
        result.summary.update(judged.summary)
        for entry, verdict in zip(result.rows, judged.rows, strict=True):
            entry["judge"] = {k: v for k, v in verdict.items() if k != "index"}
    return result


def _assessment_accuracy(records, policy) -> dict:
    """AFT's assessment accuracy (methods-alignment-2.md §2, step 4): the share of strictly ordered pairs
    whose token-mean log-probs are strictly in the label order."""
    right = total = 0
    for record, (lps, lengths) in zip(records, policy):
        for a, b in _pairs(record):
            total += 1
            right += lps[a] / max(1, lengths[a]) > lps[b] / max(1, lengths[b])
    return {"assessment_accuracy": right / total} if total else {}


def _answer_accuracy(model, tokenizer, records, rows, verifier, max_new_tokens, batch_size, stage) -> float:
    """Greedy generation from each row's prompt, labelled by the verifier (a float label counts as its value)."""
    from alignkit.data.prompt_format import PromptFormat
    from alignkit.data.verifiers import resolve_verifier, verify
    from alignkit.eval.scoring import generate_texts

    verifier = resolve_verifier(verifier)
    fmt = PromptFormat.for_tokenizer(tokenizer)
    prompts = [
        fmt.render_prompt(tokenizer, r.prompt)
        if r.is_qa
        else (
            fmt.render_messages(tokenizer, r.prompt, add_generation_prompt=True)
            if r.conversational
            else r.prompt
        )
        for r in records
    ]
    generations = generate_texts(
        model,
        tokenizer,
        prompts,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        progress=stage("greedy answers", len(prompts)),
    )
    labels = [
        float(verify(verifier, dict(rows[i]), g, index=i, source="eval rows"))
        for i, g in enumerate(generations)
    ]
    return sum(labels) / len(labels)


def _aggregate(records, rows, policy, reference, generations, task, beta) -> PreferenceResult:
    per_row, lp_w, lp_l, n_w, n_l, alphas, lr_w, lr_l = [], [], [], [], [], [], [], []
    exact, ndcgs, taus = [], [], []
    top1 = []  # 1-vs-N rows: the chosen item is the most likely of all candidates
    for i, record in enumerate(records):
        lps, lengths = policy[i]
        pairs = _pairs(record)
        alpha = rows[i].get("alpha")
        alpha = 1.0 if alpha is None else float(alpha)  # single-rater data: every rater agrees
        entry = {"index": i, "logps": lps, "lengths": lengths}
        for a, b in pairs:
            lp_w.append(lps[a]), lp_l.append(lps[b]), n_w.append(lengths[a]), n_l.append(lengths[b])
            alphas.append(alpha)
            if reference is not None:
                lr_w.append(reference[i][0][a]), lr_l.append(reference[i][0][b])
        if record.roles[:1] == ["chosen"] and record.roles.count("rejected") > 1:
            top1.append(float(lps[0] > max(lps[1:])))
        labels = _label_values(record)
        if labels is not None and len(labels) > 1:
            order = sorted(range(len(lps)), key=lambda j: (-lps[j], j))
            ideal = sorted(range(len(labels)), key=lambda j: (-labels[j], j))
            exact.append(float([labels[j] for j in order] == [labels[j] for j in ideal]))
            ndcgs.append(ndcg(lps, labels))
            tau = kendall_tau(lps, labels)
            if not math.isnan(tau):
                taus.append(tau)
            entry.update(ndcg=ndcgs[-1], kendall_tau=tau)
        if reference is not None:
            entry["ref_logps"] = reference[i][0]
        if generations is not None:
            entry["generation"] = generations[i]
        per_row.append(entry)

    def mean(xs):
        return sum(xs) / len(xs) if xs else None

    summary: dict = {"num_rows": len(records), "num_pairs": len(lp_w), "beta": beta}
    if lp_w:
        w, l_, al = torch.tensor(lp_w), torch.tensor(lp_l), torch.tensor(alphas, dtype=torch.float64)
        summary["ranking_accuracy"] = float(ranking_accuracy(w, l_, al).mean())
        summary["ranking_accuracy_length_normalized"] = float(
            ranking_accuracy(
                w / torch.tensor(n_w), l_ / torch.tensor(n_l)
            ).mean()  # no tie rule (spec vectors)
        )
        untied = al != 0.5
        if bool((~untied).any()) and bool(untied.any()):
            summary["ranking_accuracy_without_ties"] = float(ranking_accuracy(w[untied], l_[untied]).mean())
        if reference is not None:
            rw, rl = torch.tensor(lr_w), torch.tensor(lr_l)
            margin = beta * ((w - rw) - (l_ - rl))
            summary["reward_accuracy"] = float((margin > 0).double().mean())
            summary["reward_margin"] = float(margin.mean())
            summary["idealized_ranking_accuracy"] = idealized_ranking_accuracy(rw, rl, al)
            summary["alignment_gap"] = (
                summary["idealized_ranking_accuracy"]["median"] - summary["ranking_accuracy"]
            )
            summary["difficulty_threshold_mean"] = float(difficulty_thresholds(rw, rl, beta).mean())
    if top1:  # S-DPO's HitRatio@1 read from the likelihood over the candidate answers
        summary["top1_likelihood_accuracy"] = mean(top1)
    if exact:
        summary["list_exact_match"] = mean(exact)
        summary["ndcg"] = mean(ndcgs)
        summary["kendall_tau"] = mean(taus)
    if task is not None:
        summary.update(_task_metrics(task, records, policy, generations))
    return PreferenceResult(summary, per_row)


def _task_metrics(task, records, policy, generations) -> dict:
    from alignkit.data.synthetic import preference as sp

    # Every task: the exact score of the greedy generations and the share of well-formed ones.
    out = {
        "generation_score": task.mean_score(generations),
        "valid_ratio": task.well_formed_share(generations),
    }
    if task.kind == "one_vs_n":
        # S-DPO's HitRatio@1: the greedy recommendation is the true next item (and names nothing else).
        named = [sp.named_titles(task.meta[i], gen) for i, gen in enumerate(generations)]
        hits = [float(n == {rec["chosen"]}) for n, rec in zip(named, task.records)]
        rankings = [
            [records[i].completions[j] for j in sorted(range(len(lps)), key=lambda j: -lps[j])]
            for i, (lps, _) in enumerate(policy)
        ]
        out["hit_ratio_at_1"] = sum(hits) / len(hits)
        out["hit_ratio_at_1_by_likelihood"] = sp.hit_ratio_at_1(task.records, rankings=rankings)
    elif task.kind == "graded":
        # The best-graded completion is the most likely one (ties in the labels: any best one counts).
        best = [max(r["scores"]) for r in task.records]
        top = [max(range(len(lps)), key=lambda j: (lps[j], -j)) for lps, _ in policy]
        hits = [float(r["scores"][j] == b) for r, j, b in zip(task.records, top, best)]
        out["hit_ratio_at_1_by_likelihood"] = sum(hits) / len(hits)
    elif task.kind == "negatives_only":
        out["flagged_rate"] = sp.flagged_rate(generations)
    return out


def _plot(result: PreferenceResult, path: Path) -> bool:
    """Bar chart of the accuracy-type metrics in [0, 1]; False when there is nothing to plot."""
    keys = [
        k
        for k in (
            "ranking_accuracy",
            "ranking_accuracy_length_normalized",
            "reward_accuracy",
            "list_exact_match",
            "ndcg",
            "hit_ratio_at_1",
            "top1_likelihood_accuracy",
            "win_rate",
            "flip_rate",
        )
        if isinstance(result.summary.get(k), float)
    ]
    if not keys:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    ax.barh(keys[::-1], [result.summary[k] for k in keys[::-1]])
    ax.set_xlim(0, 1)
    ax.set_title("Preference evaluation")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
