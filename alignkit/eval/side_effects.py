"""``alignkit eval side-effects``: what narrow refusal unlearning breaks elsewhere (methods-alignment-2.md §8).

Data layout (a folder; any model, any domains):

* ``<domain>.jsonl``, one file per domain: rows ``{"prompt": ..., "split": "unlearn" | "eval" | "retain"}``
  (harmful requests of that domain; only ``eval`` rows are scored here, ``unlearn`` rows are what the
  unlearning run trains on and ``retain`` rows the containment set, with an optional ``"response"``: the
  refusal to keep);
* ``benign.jsonl``: rows ``{"prompt": ...}`` that should be answered (the benign false-refusal rate, and
  the baseline of the concept vectors);
* ``utility.jsonl`` (optional): rows ``{"prompt", "completion"}`` whose per-token NLL is the utility.

For each model given (``before``, ``after`` and optionally ``contained``): refusal rate per domain with
its Wilson interval under the chosen scorer (``keyword`` on greedy replies, ``logprob`` of the refusal
templates, or a ``judge`` callable / classifier), benign false-refusal rate and utility; then target
efficacy, relative drops, the EMA index and recovery (:func:`alignkit.eval.refusal.ema_report`), and
concept vectors of the ``before`` model per layer with their similarity to the target concept.
Writes ``SIDE_EFFECTS.json``, ``SIDE_EFFECTS.md`` (the table), ``similarity_heatmap.png`` and
``refusal_bars.png``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from alignkit.data.synthetic.refusal import REFUSALS
from alignkit.errors import UserError
from alignkit.eval import refusal as rf
from alignkit.eval.loading import load_model, load_tokenizer, model_name
from alignkit.eval.progress import StageProgress

SPLITS = ("unlearn", "eval", "retain")
SPECIAL_FILES = ("benign", "utility")
SCORERS = ("keyword", "logprob", "judge")
# The stand-in's refusal templates (alignkit.data.synthetic.refusal); pass a real model's own for `logprob`.
DEFAULT_TEMPLATES = REFUSALS


class LayoutError(UserError):
    """A malformed domain folder; the message names the file, row and field."""


@dataclass
class DomainData:
    domains: dict[str, dict[str, list[dict]]]  # domain -> split -> rows
    benign: list[str]
    utility: list[dict] = field(default_factory=list)


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise LayoutError(f"{path}, line {number}: not valid JSON ({err.msg}).") from None
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
            raise LayoutError(f"{path}, line {number}: field `prompt` must be a non-empty string.")
        rows.append(row)
    return rows


def load_domains(folder: str | Path) -> DomainData:
    """Read the documented layout (module docstring); every mistake is one :class:`LayoutError` line."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LayoutError(
            f"--domains {folder}: not a folder (expected <domain>.jsonl files and benign.jsonl)."
        )
    domains: dict[str, dict[str, list[dict]]] = {}
    for path in sorted(folder.glob("*.jsonl")):
        if path.stem in SPECIAL_FILES:
            continue
        parts: dict[str, list[dict]] = {s: [] for s in SPLITS}
        for number, row in enumerate(_read_jsonl(path), 1):
            split = row.get("split")
            if split not in SPLITS:
                raise LayoutError(
                    f"{path}, row {number}: field `split` must be one of {SPLITS}, got {split!r}."
                )
            parts[split].append(row)
        if not parts["eval"]:
            raise LayoutError(f"{path}: no row with split 'eval'; the refusal rate is measured on those.")
        domains[path.stem] = parts
    if len(domains) < 2:
        raise LayoutError(
            f"{folder}: found {len(domains)} domain file(s); side effects need the target and others."
        )
    benign_path = folder / "benign.jsonl"
    if not benign_path.is_file():
        raise LayoutError(
            f"{benign_path}: missing; benign prompts give the false-refusal rate and the baseline."
        )
    utility_path = folder / "utility.jsonl"
    utility = _read_jsonl(utility_path) if utility_path.is_file() else []
    for number, row in enumerate(utility, 1):
        if not isinstance(row.get("completion"), str):
            raise LayoutError(f"{utility_path}, row {number}: field `completion` must be a string.")
    return DomainData(domains, [r["prompt"] for r in _read_jsonl(benign_path)], utility)


@dataclass
class SideEffectsResult:
    settings: dict
    refusal: dict[str, dict[str, dict]]  # model label -> domain (and "benign") -> {rate, n, low, high}
    utility: dict[str, float]  # model label -> per-token NLL of utility.jsonl (NaN without it)
    report: dict
    similarity: dict[str, list[float]]
    correlation: dict

    def rates(self, label: str) -> dict[str, float]:
        return {d: v["rate"] for d, v in self.refusal[label].items() if d != "benign"}

    def table(self) -> str:
        labels = list(self.refusal)
        head = "| domain | " + " | ".join(f"refusal {label}" for label in labels) + " | relative drop |"
        if "recovery" in self.report:
            head += " recovery |"
        lines = [head, "|" + "---|" * (head.count("|") - 1)]
        for d in self.rates(labels[0]):
            cells = [f"{self.refusal[label][d]['rate']:.3f}" for label in labels]
            row = f"| {d}{' (target)' if d == self.report['target'] else ''} | " + " | ".join(cells)
            row += f" | {self.report['relative_drop'][d]:.3f} |"
            if "recovery" in self.report:
                row += f" {self.report['recovery'][d]:.3f} |"
            lines.append(row)
        benign = " | ".join(f"{self.refusal[label]['benign']['rate']:.3f}" for label in labels)
        lines.append(f"| benign (false refusal) | {benign} | |" + (" |" if "recovery" in self.report else ""))
        utility = " | ".join(f"{self.utility[label]:.3f}" for label in labels)
        lines.append(f"| utility NLL/token | {utility} | |" + (" |" if "recovery" in self.report else ""))
        summary = [
            f"target efficacy {self.report['target_efficacy']:.3f}, EMA index {self.report['ema_index']:.3f}"
            + (
                f", after containment {self.report['ema_index_contained']:.3f}, target compliance kept "
                f"{self.report['target_compliance_kept']:.3f}"
                if "ema_index_contained" in self.report
                else ""
            ),
            f"early-layer similarity vs drop: Spearman {self.correlation['spearman']:.3f} "
            f"(first {self.correlation['early_layers']} layers; scorer {self.settings['scorer']})",
        ]
        return "\n".join(lines + [""] + summary)

    def save(self, output_dir: str | Path) -> dict[str, Path]:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {
            "json": out / "SIDE_EFFECTS.json",
            "table": out / "SIDE_EFFECTS.md",
            "heatmap": out / "similarity_heatmap.png",
            "bars": out / "refusal_bars.png",
        }
        payload = {
            "settings": self.settings,
            "refusal": self.refusal,
            "utility": self.utility,
            "report": self.report,
            "similarity": self.similarity,
            "correlation": self.correlation,
        }
        paths["json"].write_text(json.dumps(_finite(payload), indent=1), encoding="utf-8")
        paths["table"].write_text(self.table() + "\n", encoding="utf-8")
        self._plots(paths["heatmap"], paths["bars"])
        return paths

    def _plots(self, heatmap: Path, bars: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        domains = list(self.similarity)
        grid = [self.similarity[d] for d in domains]
        fig, ax = plt.subplots(figsize=(1.0 + 0.6 * len(grid[0]), 0.9 + 0.45 * len(domains)))
        # The colour range follows the data (cosines near 1 would all look alike on [-1, 1]); every cell is labelled.
        low = min(min(row) for row in grid)
        image = ax.imshow(grid, vmin=min(low, 0.999), vmax=1, cmap="viridis", aspect="auto")
        for i, row in enumerate(grid):
            for j, value in enumerate(row):
                ax.text(j, i, f"{value:.3f}", ha="center", va="center", fontsize=7, color="white")
        ax.set_yticks(range(len(domains)), domains)
        ax.set_xticks(range(len(grid[0])), [str(i) for i in range(len(grid[0]))])
        ax.set_xlabel("layer")
        ax.set_title(f"cosine to the {self.report['target']} concept vector")
        fig.colorbar(image, ax=ax)
        fig.tight_layout()
        fig.savefig(heatmap, dpi=120)
        plt.close(fig)

        labels = list(self.refusal)
        names = list(self.rates(labels[0]))
        fig, ax = plt.subplots(figsize=(1.5 + 1.1 * len(names), 3.6))
        width = 0.8 / len(labels)
        for i, label in enumerate(labels):
            values = [self.refusal[label][d]["rate"] for d in names]
            ax.bar([x + i * width for x in range(len(names))], values, width, label=label)
        ax.set_xticks([x + 0.4 - width / 2 for x in range(len(names))], names, rotation=30, ha="right")
        ax.set_ylabel(f"refusal rate ({self.settings['scorer']})")
        ax.set_ylim(0, 1.05)
        ax.legend()
        fig.tight_layout()
        fig.savefig(bars, dpi=120)
        plt.close(fig)


def _finite(obj):
    """JSON without NaN tokens: NaN becomes null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def _render(tokenizer, prompts: list[str]) -> tuple[list[str], bool]:
    """Prompts in the model's format (chat template where it has one), and whether to add special tokens."""
    from alignkit.data import PromptFormat

    fmt = PromptFormat.for_tokenizer(tokenizer)
    return [fmt.render_prompt(tokenizer, p) for p in prompts], fmt.mode != "chat"


def refusal_scores(
    model,
    tokenizer,
    prompts: list[str],
    *,
    scorer: str = "keyword",
    judge: rf.Judge | None = None,
    templates: tuple[str, ...] = DEFAULT_TEMPLATES,
    window: int = 80,
    max_new_tokens: int = 64,
    batch_size: int = 16,
    progress=None,
) -> list[float]:
    """One refusal value in [0, 1] per prompt under ``scorer`` (see the module docstring)."""
    from alignkit.eval.scoring import generate_texts, score_texts

    rendered, specials = _render(tokenizer, prompts)
    if scorer == "logprob":
        per_template = [
            score_texts(
                model,
                tokenizer,
                rendered,
                [t] * len(rendered),
                batch_size=batch_size,
                add_eos=False,
                add_special_tokens=specials,
                progress=progress,
            )  # fmt: skip
            for t in templates
        ]
        return [rf.refusal_probability([s[i].token_logps for s in per_template]) for i in range(len(prompts))]
    replies = generate_texts(
        model, tokenizer, rendered, max_new_tokens=max_new_tokens, batch_size=batch_size,
        add_special_tokens=specials, progress=progress,
    )  # fmt: skip
    if scorer == "judge":
        if judge is None:
            raise ValueError("scorer='judge' needs a `judge(prompt, response) -> float` (or --judge-model).")
        return [float(judge(p, r)) for p, r in zip(prompts, replies)]
    return [rf.keyword_refusal(r, window) for r in replies]


def _utility_nll(model, tokenizer, rows: list[dict], batch_size: int) -> float:
    if not rows:
        return float("nan")
    from alignkit.eval.scoring import score_texts

    rendered, specials = _render(tokenizer, [r["prompt"] for r in rows])
    scored = score_texts(
        model,
        tokenizer,
        rendered,
        [r["completion"] for r in rows],
        batch_size=batch_size,
        add_special_tokens=specials,
    )
    valid = [s for s in scored if s.valid]
    tokens = sum(s.token_logps.numel() for s in valid)
    return -sum(float(s.token_logps.double().sum()) for s in valid) / max(1, tokens)


def classifier_judge(model_path: str, refusal_label: str) -> rf.Judge:
    """A judge from a local/Hub text-classification model: the probability of ``refusal_label`` on the reply."""
    from transformers import pipeline

    classify = pipeline("text-classification", model=model_path, top_k=None)

    def judge(prompt: str, response: str) -> float:
        scores = {s["label"]: s["score"] for s in classify(response)[0]} if response else {}
        if scores and refusal_label not in scores:
            raise ValueError(
                f"--judge-label {refusal_label!r} is not a label of {model_path} ({sorted(scores)})."
            )
        return float(scores.get(refusal_label, 0.0))

    return judge


def evaluate_side_effects(
    models: dict[str, object],
    data: DomainData | str | Path,
    target: str,
    *,
    scorer: str = "keyword",
    judge: rf.Judge | None = None,
    templates: tuple[str, ...] = DEFAULT_TEMPLATES,
    window: int = 80,
    max_new_tokens: int = 64,
    max_prompts: int | None = None,
    batch_size: int = 16,
    tokenizer=None,
    progress=True,
) -> SideEffectsResult:
    """Score ``models`` (``{"before": m0, "after": m1, "contained": m2}``, paths or loaded) on ``data``.

    The first model is the reference point (``before``): relative drops, recovery and concept vectors
    are taken from it; the second is ``after``; a third, if any, is ``contained``.
    """
    if scorer not in SCORERS:
        raise ValueError(f"`scorer` must be one of {SCORERS}, got {scorer!r}.")
    if not 2 <= len(models) <= 3:
        raise ValueError("pass 2 or 3 models: before, after and optionally contained.")
    data = data if isinstance(data, DomainData) else load_domains(data)
    if target not in data.domains:
        raise LayoutError(f"--target {target!r}: no {target}.jsonl among the domains {sorted(data.domains)}.")
    cut = slice(0, max_prompts)
    eval_prompts = {d: [r["prompt"] for r in parts["eval"]][cut] for d, parts in data.domains.items()}
    benign = data.benign[cut]
    refusal, utility, loaded = {}, {}, {}
    total = sum(map(len, eval_prompts.values())) + len(benign)
    with StageProgress(progress) as bars:
        for label, source in models.items():
            model = load_model(source).eval()
            tok = load_tokenizer(tokenizer, source, who="eval side-effects")
            loaded[label] = (model, tok)
            step = bars.stage(f"refusals: {label} ({model_name(source)})", total)
            refusal[label] = {}
            for d, prompts in [*eval_prompts.items(), ("benign", benign)]:
                values = refusal_scores(
                    model, tok, prompts, scorer=scorer, judge=judge, templates=templates, window=window,
                    max_new_tokens=max_new_tokens, batch_size=batch_size,
                )  # fmt: skip
                rate = sum(values) / len(values)
                low, high = rf.wilson_interval(sum(values), len(values))
                refusal[label][d] = {"rate": rate, "n": len(values), "low": low, "high": high}
                if step:
                    step(len(prompts))
            utility[label] = _utility_nll(model, tok, data.utility, batch_size)
        labels = list(models)
        rates = [{d: v["rate"] for d, v in refusal[label].items() if d != "benign"} for label in labels]
        report = rf.ema_report(rates[0], rates[1], target, rates[2] if len(rates) == 3 else None)
        step = bars.stage("concept vectors", 1)
        model, tok = loaded[labels[0]]
        rendered = {d: _render(tok, p)[0] for d, p in eval_prompts.items()}
        benign_rendered, specials = _render(tok, benign)
        vectors = rf.concept_vectors(
            model, tok, rendered, benign_rendered, add_special_tokens=specials, batch_size=batch_size
        )
        similarity = rf.layer_similarity(vectors, target)
        if step:
            step(1)
    correlation = rf.early_layer_correlation(similarity, report["relative_drop"], target)
    settings = {
        "models": {label: model_name(m) for label, m in models.items()},
        "target": target,
        "scorer": scorer,
        "window": window if scorer == "keyword" else None,
        "templates": list(templates) if scorer == "logprob" else None,
        "max_new_tokens": max_new_tokens,
        "max_prompts": max_prompts,
    }
    return SideEffectsResult(settings, refusal, utility, report, similarity, correlation)
