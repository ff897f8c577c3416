"""Which self-samples may stand for the model's distribution (spec §4(f): self-samples can be harmful).

A sample is dropped when it is empty, when it is one of the prompt's own human negatives (never let
``y_l`` appear among its samples), or when the user's ``sample_filter(prompt, negatives, sample)``
returns False (e.g. a classifier or a similarity threshold). Counts of each are returned for logging.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

SampleFilter = Callable[[object, Sequence[str], str], bool]


def _normalise(text: str) -> str:
    return " ".join(text.split()).lower()


def filter_samples(
    completions: Sequence[Sequence[str]],
    prompts: Sequence[object],
    negatives: Sequence[Sequence[str]],
    sample_filter: SampleFilter | None = None,
) -> tuple[list[list[str]], dict[str, int]]:
    """``completions[i]`` kept for prompt ``i``, and ``{"empty", "negative", "filter", "kept"}`` counts."""
    counts = {"empty": 0, "negative": 0, "filter": 0, "kept": 0}
    kept: list[list[str]] = []
    for prompt, samples, own in zip(prompts, completions, negatives):
        forbidden = {_normalise(n) for n in own}
        row = []
        for sample in samples:
            if not sample.strip():
                counts["empty"] += 1
            elif _normalise(sample) in forbidden:
                counts["negative"] += 1
            elif sample_filter is not None and not sample_filter(prompt, list(own), sample):
                counts["filter"] += 1
            else:
                row.append(sample)
        counts["kept"] += len(row)
        kept.append(row)
    return kept, counts
