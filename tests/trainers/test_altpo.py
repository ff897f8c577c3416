"""AltPO's alternates: drawn once with the shared sampler, cached, never regenerated, files validated.

The generic per-method test (test_methods.py) trains AltPO in its family's direction; the spec
vectors of its loss are in tests/losses/test_altpo_loss.py.
"""

from __future__ import annotations

import json
import shutil

import pytest
from trainer_helpers import FORGET, train_args
from transformers import AutoModelForCausalLM

from alignkit import get_method
from alignkit.trainers.alternates import RUN_FILE, build_rows, cut_at_stop, forget_questions

K = 2


class CountingModel:
    """Counts ``generate`` calls of a real model (the sampler drives ``model.generate``)."""

    def __init__(self, model):
        self.calls, real = 0, model.generate

        def generate(*args, **kwargs):
            self.calls += 1
            return real(*args, **kwargs)

        model.generate = generate
        self.model = model


def altpo_args(tmp_path, name="run", cache="cache", **overrides):
    kwargs = dict(
        max_steps=1,
        num_alternates=K,
        alternate_max_new_tokens=8,
        sample_cache_dir=str(tmp_path / cache),
    )
    kwargs.update(overrides)
    return train_args(get_method("altpo"), tmp_path / name, **kwargs)


def altpo_trainer(model_dir, tokenizer, args, rows=FORGET):
    counter = CountingModel(AutoModelForCausalLM.from_pretrained(model_dir))
    trainer = get_method("altpo").trainer_cls(
        model=counter.model, args=args, train_dataset=rows, processing_class=tokenizer
    )
    return trainer, counter


def alternates(trainer) -> list[str]:
    return [r["alternate"] for r in trainer.alternates]


def test_generated_once_then_read_from_the_cache_or_the_run_folder(tiny_model_dir, tokenizer, tmp_path):
    first, counted = altpo_trainer(tiny_model_dir, tokenizer, altpo_args(tmp_path, "a"))
    assert counted.calls > 0
    # K consecutive rows per question, each training row = its forget row with its alternate as chosen.
    assert [r["forget_index"] for r in first.alternates] == [q for q in range(len(FORGET)) for _ in range(K)]
    assert len(first.train_dataset) == K * len(FORGET)
    stored = json.loads((tmp_path / "a" / RUN_FILE).read_text())
    assert [r["index"] for r in stored["rows"]] == list(range(K * len(FORGET)))
    assert {"question", "answer", "alternate"} <= set(stored["rows"][0])
    assert stored["meta"]["sampling"]["top_p"] == 1.0 and stored["meta"]["sampling"]["top_k"] == 0
    assert "Where was Arlo born?" in stored["meta"]["requests"][0]
    # Same inputs in a new run folder: the sampler cache answers.
    again, counted = altpo_trainer(tiny_model_dir, tokenizer, altpo_args(tmp_path, "b"))
    assert counted.calls == 0 and alternates(again) == alternates(first)
    # The first run folder with an empty sampler cache: its own file answers.
    same_run, counted = altpo_trainer(tiny_model_dir, tokenizer, altpo_args(tmp_path, "a", cache="empty"))
    assert counted.calls == 0 and alternates(same_run) == alternates(first)


def test_same_seed_same_alternates_at_batch_1_and_8(tiny_model_dir, tokenizer, tmp_path):
    one, calls_one = altpo_trainer(
        tiny_model_dir, tokenizer, altpo_args(tmp_path, "b1", cache="c1", alternate_batch_size=1)
    )
    eight, calls_eight = altpo_trainer(
        tiny_model_dir, tokenizer, altpo_args(tmp_path, "b8", cache="c8", alternate_batch_size=8)
    )
    assert (calls_one.calls, calls_eight.calls) == (len(FORGET), 1)
    assert alternates(one) == alternates(eight)
    other, _ = altpo_trainer(
        tiny_model_dir, tokenizer, altpo_args(tmp_path, "s1", cache="c8", alternate_seed=1)
    )
    assert alternates(other) != alternates(one)


def test_run_folder_with_other_alternates_is_an_error(tiny_model_dir, tokenizer, tmp_path):
    altpo_trainer(tiny_model_dir, tokenizer, altpo_args(tmp_path, "a"))
    with pytest.raises(ValueError, match=f"{RUN_FILE} holds AltPO alternates made for other") as error:
        altpo_trainer(tiny_model_dir, tokenizer, altpo_args(tmp_path, "a", alternate_seed=3))
    assert "\n" not in str(error.value)


def test_resume_reads_the_checkpoints_alternates(tiny_model_dir, tokenizer, tmp_path):
    """A killed run resumes on the alternates it trained on, with no sampler cache and no run-folder copy."""
    args = altpo_args(tmp_path, "run", max_steps=2, save_strategy="steps", save_steps=1)
    first, _ = altpo_trainer(tiny_model_dir, tokenizer, args)
    first.train()
    assert (tmp_path / "run" / "checkpoint-1" / RUN_FILE).is_file()
    shutil.rmtree(tmp_path / "cache")
    (tmp_path / "run" / RUN_FILE).unlink()
    shutil.rmtree(tmp_path / "run" / "checkpoint-2")  # as if killed before step 2 was saved
    args = altpo_args(tmp_path, "run", max_steps=2, save_strategy="steps", save_steps=1)
    resumed, counted = altpo_trainer(tiny_model_dir, tokenizer, args)
    assert counted.calls == 0 and alternates(resumed) == alternates(first)
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 2 and counted.calls == 0


OU_ROWS = [
    {"question": r["question"], "answer": r["answer"], "alternate": f"alt {i}"} for i, r in enumerate(FORGET)
]


def test_alternates_file_in_open_unlearning_format(tiny_model_dir, tokenizer, tmp_path):
    path = tmp_path / "alt5_seed_0.json"
    path.write_text(json.dumps(OU_ROWS + [{"question": "Elsewhere?", "answer": "x", "alternate": "y"}]))
    trainer, counted = altpo_trainer(
        tiny_model_dir, tokenizer, altpo_args(tmp_path, alternates_file=str(path))
    )
    assert counted.calls == 0
    assert alternates(trainer) == [f"alt {i}" for i in range(len(FORGET))]
    # The optional filter applies to a file's alternates too (one row here repeats its answer).
    path.write_text(json.dumps([*OU_ROWS, {**OU_ROWS[0], "alternate": FORGET[0]["answer"]}]))
    args = altpo_args(tmp_path, "filtered", alternates_file=str(path), drop_alternates=["identical"])
    trainer, _ = altpo_trainer(tiny_model_dir, tokenizer, args)
    assert trainer.alternates_meta["counts"] == {
        "empty": 0, "identical": 1, "truncated": 0, "dropped": 1, "kept": len(FORGET)
    }  # fmt: skip
    assert alternates(trainer) == [f"alt {i}" for i in range(len(FORGET))]


@pytest.mark.parametrize(
    "content, names",
    [
        (
            OU_ROWS[:3] + [{"question": "q", "answer": "a"}] + OU_ROWS[3:],
            ["row 3", "`alternate`", "is missing"],
        ),
        (OU_ROWS[:1] + [{**OU_ROWS[1], "answer": 7}], ["row 1", "`answer`", "must be text"]),
        ('{"question": "q", "answer": "a", "alternate": "b"}\n{oops', ["line 2", "not JSON"]),
        (OU_ROWS[1:], ["forget row 0", "has no alternate"]),
        ([], ["non-empty JSON list"]),
        ([{**r, "alternate": ""} for r in OU_ROWS], [f"all {len(FORGET)} alternates", "are empty"]),
        ([{**r, "alternate": " \n"} for r in OU_ROWS], [f"all {len(FORGET)} alternates", "are empty"]),
    ],
)
def test_bad_alternates_file_is_one_line(content, names, tiny_model_dir, tokenizer, tmp_path):
    path = tmp_path / "alternates.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(ValueError) as error:
        altpo_trainer(tiny_model_dir, tokenizer, altpo_args(tmp_path, alternates_file=str(path)))
    message = str(error.value)
    assert "\n" not in message and str(path) in message, message
    for name in names:
        assert name in message, message


def test_post_processing_counts_and_optional_filter():
    """Cut at the first stop string, strip; counts of empty / identical / length-limited; filter off by default."""
    assert cut_at_stop(" Born in Lima.\nQuestion: next", ["Question:", "Q:"]) == "Born in Lima."
    assert cut_at_stop("A Q: B Question: C", ["Question:", "Q:"]) == "A"
    qas = forget_questions(FORGET[:2], on_invalid="raise")
    completions = [["Q: nothing", FORGET[0]["answer"] + "  "], ["Born in Rome.", "x" * 50]]

    def hit_limit(raw):
        return len(raw) >= 50

    kept, counts = build_rows(qas, completions, stop_strings=["Q:"], drop=[], hit_limit=hit_limit)
    assert [r["alternate"] for r in kept] == ["", FORGET[0]["answer"], "Born in Rome.", "x" * 50]
    assert counts == {"empty": 1, "identical": 1, "truncated": 1, "dropped": 0, "kept": 4}
    # A file's alternates are not cut or stripped: whitespace only is still empty.
    _, counts = build_rows(qas[:1], [[" \n"]], stop_strings=(), drop=[], hit_limit=hit_limit)
    assert counts["empty"] == 1
    kept, counts = build_rows(
        qas, completions, stop_strings=["Q:"], drop=["empty", "identical"], hit_limit=hit_limit
    )
    assert [r["alternate"] for r in kept] == ["Born in Rome.", "x" * 50] and counts["dropped"] == 2


def test_rows_without_alternates_are_refused(tiny_model_dir, tokenizer, tmp_path):
    trainer, _ = altpo_trainer(tiny_model_dir, tokenizer, altpo_args(tmp_path))
    with pytest.raises(ValueError, match="only the training rows have alternates"):
        trainer.evaluate(FORGET)
    with pytest.raises(ValueError, match="`eval_dataset` is not supported"):
        get_method("altpo").trainer_cls(
            model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
            args=altpo_args(tmp_path),
            train_dataset=FORGET,
            eval_dataset=FORGET,
            processing_class=tokenizer,
        )
