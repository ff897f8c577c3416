"""The one self-sample step (``SelfSampleStep``): run folder, then cache, then a draw; de-duplication and
labels applied to the raw draw; one log line with every count; a resume refuses another draw."""

from __future__ import annotations

import logging

import pytest

from alignkit.sampling import SamplingSettings
from alignkit.trainers.self_samples import RunSamples, SelfSampleStep


class Draws:
    """A draw function that counts its calls (stands in for the sampler, which has its own tests)."""

    def __init__(self, completions):
        self.calls, self.completions = 0, completions

    def __call__(self):
        self.calls += 1
        return [list(c) for c in self.completions], [], {"seconds": 1.0}


def right_if_even(completions):  # a label step: value 1.0 for an even length, counts of all-right prompts
    values = [[float(len(c) % 2 == 0) for c in row] for row in completions]
    return completions, values, {"all_correct": sum(bool(v) and all(v) for v in values)}


def step(tmp_path, **kw):
    return SelfSampleStep(
        "AFT",
        SamplingSettings(num_samples=3),
        cache_dir=str(tmp_path / "cache"),
        store=RunSamples("aft_samples", "AFT"),
        **kw,
    )


RAW = [["ab", "ab ", "abc"], ["", "xy", "xy"], [""]]


def test_dedupe_label_store_and_read_back_without_drawing(tmp_path, caplog):
    draws = Draws(RAW)
    first = step(tmp_path, dedupe=True, label=right_if_even)
    with caplog.at_level(logging.INFO, logger="alignkit.trainers.self_samples"):
        got = first.obtain("k1", draws, output_dir=str(tmp_path / "run"), should_save=True)
    assert draws.calls == 1
    assert got.completions == [["ab", "abc"], ["xy"], []]
    assert got.values == [[1.0, 0.0], [1.0], []]
    assert got.counts == {"empty": 2, "duplicates": 2, "all_correct": 1}
    # One line with every count, a warning because a prompt was left with no sample.
    lines = [r for r in caplog.records if r.name == "alignkit.trainers.self_samples"]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert lines[0].getMessage() == (
        "AFT: 3 prompts sampled; empty 2, duplicates 2, all correct 1, prompts without samples 1 "
        "(aft_samples.json)"
    )
    # The run folder answers (no draw), then the cache answers in another folder (no draw either).
    again = step(tmp_path, dedupe=True, label=right_if_even).obtain(
        "k1", draws, output_dir=str(tmp_path / "run")
    )
    other = step(tmp_path, dedupe=True, label=right_if_even).obtain(
        "k1", draws, output_dir=str(tmp_path / "other")
    )
    assert draws.calls == 1 and again.completions == other.completions == got.completions
    # The cache holds the labelled draw, so another label step goes under another key: a new draw.
    plain = step(tmp_path).obtain("k0", draws, output_dir=str(tmp_path / "third"))
    assert draws.calls == 2 and plain.completions == RAW and plain.counts == {}


def test_other_key_in_the_run_folder_is_an_error(tmp_path):
    step(tmp_path).obtain("k1", Draws(RAW), output_dir=str(tmp_path / "run"), should_save=True)
    with pytest.raises(ValueError, match="aft_samples.json holds AFT samples made for other weights"):
        step(tmp_path).obtain("k2", Draws(RAW), output_dir=str(tmp_path / "run"))


def test_checkpoint_copy_and_resume_check(tmp_path):
    mine = step(tmp_path, label=right_if_even)
    mine.obtain("k1", Draws(RAW), output_dir=str(tmp_path / "run"))
    mine.save(str(tmp_path / "checkpoint-2"))
    mine.check(str(tmp_path / "checkpoint-2"))  # the same draw: accepted
    # A run whose checkpoint holds another draw under the same key must not resume silently.
    changed = step(tmp_path, label=right_if_even)
    changed.obtain("k1", Draws([["zz"], ["q"], ["w"]]), output_dir=str(tmp_path / "b"), use_cache=False)
    with pytest.raises(ValueError, match="the checkpoint was trained on another draw of AFT samples"):
        changed.check(str(tmp_path / "checkpoint-2"))
