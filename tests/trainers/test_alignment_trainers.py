"""S-DPO / DPO / LiPO trainers on a tiny model: TRL parity, reference modes, negatives, bad input."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from trainer_helpers import preference_rows, train_args
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignkit import get_method
from alignkit.data import RecordError
from alignkit.data.negatives import ResampledNegatives, pick_negatives

ONE_VS_N = preference_rows("one_vs_n")
PAIRS = preference_rows("pairwise")
LISTS = preference_rows("ranked")


def make(name, model_dir, tmp_path, rows, **overrides):
    spec = get_method(name)
    return spec.trainer_cls(
        model=AutoModelForCausalLM.from_pretrained(model_dir),
        args=train_args(spec, tmp_path, **overrides),
        train_dataset=rows,
        processing_class=AutoTokenizer.from_pretrained(model_dir),
    )


def first_batch_loss(trainer, n=4) -> float:
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(n)])
    with torch.no_grad():
        return float(trainer.compute_loss(trainer.model, batch))


# --------------------------------------------------------------------------- identities at step 0


def test_sdpo_step_zero_loss_is_log_one_plus_n(tiny_model_dir, tmp_path):
    """Policy == reference, so every log-ratio is 0 and L = softplus(log N) = log(1 + N) per prompt."""
    rows = [
        dict(r, rejected=r["rejected"][: 1 + i % 3]) for i, r in enumerate(ONE_VS_N[:4])
    ]  # N = 1, 2, 3, 1
    trainer = make("softmax_dpo", tiny_model_dir, tmp_path, rows, num_negatives=None)
    expected = sum(math.log(1 + 1 + i % 3) for i in range(4)) / 4
    assert first_batch_loss(trainer) == pytest.approx(expected, abs=1e-5)


def test_sdpo_draws_num_negatives_once_per_row(tiny_model_dir, tmp_path):
    trainer = make("softmax_dpo", tiny_model_dir, tmp_path, ONE_VS_N, num_negatives=2)
    assert [len(r["completion_ids"]) for r in trainer.train_dataset] == [3] * len(ONE_VS_N)
    again = make("softmax_dpo", tiny_model_dir, tmp_path / "again", ONE_VS_N, num_negatives=2)
    assert trainer.train_dataset["completion_ids"] == again.train_dataset["completion_ids"]


def test_resampled_negatives_change_per_epoch_and_repeat_per_seed():
    draws = {e: pick_negatives(10, 3, seed=0, index=5, epoch=e) for e in range(4)}
    assert all(len(d) == 3 and len(set(d)) == 3 for d in draws.values())
    assert len({tuple(d) for d in draws.values()}) > 1, draws
    assert pick_negatives(10, 3, seed=0, index=5, epoch=2) == draws[2]
    assert pick_negatives(2, 3, seed=0, index=5) == [0, 1]  # fewer than asked: all of them


def test_resampling_trainer_sees_new_negatives_each_epoch(tiny_model_dir, tmp_path):
    trainer = make(
        "softmax_dpo",
        tiny_model_dir,
        tmp_path,
        ONE_VS_N[:4],
        num_negatives=1,
        resample_negatives_each_epoch=True,
        max_steps=-1,
        num_train_epochs=3,
    )
    view = trainer.train_dataset
    assert isinstance(view, ResampledNegatives)
    assert len(view.encoded[0]["completion_ids"]) == 4  # the whole pool is encoded
    seen = []
    for epoch in range(3):
        view.set_epoch(epoch)
        seen.append(tuple(tuple(view[i]["completion_ids"][1]) for i in range(4)))
        assert all(len(view[i]["completion_ids"]) == 2 for i in range(4))
    assert len(set(seen)) > 1
    trainer.train()
    assert view.epoch == 2  # the epoch callback reached the view


# --------------------------------------------------------------------------- TRL parity


def test_dpo_matches_trl_dpo_trainer(tiny_model_dir, tmp_path):
    """Same pairs, same policy and reference: our `dpo` and TRL's DPOTrainer agree to 1e-6.

    The reference is a *different* model (the policy after a few S-DPO steps) so the loss depends on
    both; the reference log-probs are compared through both trainers' precomputed columns.
    """
    from trl import DPOConfig, DPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    moved = make("softmax_dpo", tiny_model_dir, tmp_path / "moved", ONE_VS_N, max_steps=3)
    moved.train()
    ref_dir = tmp_path / "ref"
    moved.save_model(str(ref_dir))
    rows = PAIRS[:4]

    common = dict(per_device_train_batch_size=4, use_cpu=True, report_to="none", save_strategy="no")
    trl_args = DPOConfig(
        output_dir=str(tmp_path / "trl"),
        beta=0.1,
        bf16=False,
        gradient_checkpointing=False,
        precompute_ref_log_probs=True,
        **common,
    )
    import datasets

    trl = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        ref_model=AutoModelForCausalLM.from_pretrained(ref_dir),
        args=trl_args,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    # Our precompute, with the same other model as the reference. The flat layout, as TRL's: the packed
    # one (share_prompt auto packs these long-prompt pairs) sums in another order, ~1 float32 ulp of these
    # ~-60 sums (7.6e-6) apart; its agreement with the flat forward is tests/trainers/test_shared_prompt.py's.
    spec = get_method("dpo")
    ours = spec.trainer_cls(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        ref_model=AutoModelForCausalLM.from_pretrained(ref_dir),
        args=train_args(
            spec,
            tmp_path / "ours",
            ref_mode="precomputed",
            ref_cache_dir=str(tmp_path / "c2"),
            share_prompt="off",
        ),
        train_dataset=rows,
        processing_class=tokenizer,
    )
    trl_ref = torch.tensor(
        [[r["ref_chosen_logps"], r["ref_rejected_logps"]] for r in trl.train_dataset], dtype=torch.float64
    )
    our_ref = torch.tensor([r["ref_logps"] for r in ours.train_dataset], dtype=torch.float64)
    assert torch.allclose(our_ref, trl_ref, atol=1e-6, rtol=0), (our_ref, trl_ref)
    assert float((our_ref[:, 0] - our_ref[:, 1]).abs().max()) > 0.1  # not a vacuous comparison

    trl_batch = trl.data_collator([trl.train_dataset[i] for i in range(4)])
    our_batch = ours.data_collator([ours.train_dataset[i] for i in range(4)])
    assert torch.equal(trl_batch["input_ids"][:4][trl_batch["completion_mask"][:4].bool()],
                       our_batch["input_ids"][0::2][our_batch["completion_mask"][0::2].bool()])  # fmt: skip
    with torch.no_grad():
        trl_loss = float(trl.compute_loss(trl.model, trl_batch))
        our_loss = float(ours.compute_loss(ours.model, our_batch))
    assert our_loss == pytest.approx(trl_loss, abs=1e-6)
    assert abs(our_loss - math.log(2)) > 1e-3  # the reference differs from the policy


# --------------------------------------------------------------------------- reference modes


@pytest.mark.parametrize("name,rows", [("softmax_dpo", ONE_VS_N), ("lipo", LISTS)])
def test_precomputed_reference_for_lists_equals_model_reference(name, rows, tiny_model_dir, tmp_path):
    """The cache holds K values per row (K varies), and the loss after a step equals the live reference's."""
    rows = [dict(r) for r in rows[:4]]
    if name == "softmax_dpo":
        rows[1]["rejected"] = rows[1]["rejected"][:1]  # K = 2 next to K = 4
    losses = {}
    for mode in ("model", "precomputed"):
        extra = {"num_negatives": None} if name == "softmax_dpo" else {}
        cache = str(tmp_path / "cache")
        trainer = make(
            name,
            tiny_model_dir,
            tmp_path / mode,
            rows,
            ref_mode=mode,
            ref_cache_dir=cache,
            max_steps=2,
            **extra,
        )
        if mode == "precomputed":
            assert [len(r["ref_logps"]) for r in trainer.train_dataset] == [
                len(r["completion_ids"]) for r in trainer.train_dataset
            ]
        trainer.train()
        losses[mode] = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert losses["model"] == pytest.approx(losses["precomputed"], abs=1e-5)
    assert losses["model"][1] != pytest.approx(losses["model"][0], abs=1e-6)


@pytest.mark.parametrize("name,rows", [("softmax_dpo", ONE_VS_N), ("lipo", LISTS)])
def test_lora_uses_the_adapter_off_reference(name, rows, tiny_model_dir, tmp_path):
    from peft import LoraConfig

    spec = get_method(name)
    trainer = spec.trainer_cls(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        args=train_args(spec, tmp_path, max_steps=3, learning_rate=1e-2),
        train_dataset=rows,
        processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    assert trainer.ref_mode == "adapter_off" and trainer.ref_model is None
    trainer.train()
    logs = [log for log in trainer.state.log_history if "loss" in log]
    role = "chosen" if name == "softmax_dpo" else "ranked"
    assert logs[0][f"logratio/{role}"] == pytest.approx(0.0, abs=1e-6)  # adapter starts as identity
    assert any(abs(log[f"logratio/{role}"]) > 1e-4 for log in logs[1:])


# --------------------------------------------------------------------------- logging


def test_sdpo_logs_upstream_metric_names(tiny_model_dir, tmp_path):
    trainer = make("softmax_dpo", tiny_model_dir, tmp_path, ONE_VS_N, max_steps=2)
    trainer.train()
    first = trainer.state.log_history[0]
    for key in ("rewards/chosen", "rewards/rejected1", "rewards/rejected3", "rewards/margins-rejected2",
                "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected"):  # fmt: skip
        assert key in first, sorted(first)


# --------------------------------------------------------------------------- bad input


def test_zero_negatives_are_refused_naming_the_row(tiny_model_dir, tmp_path):
    rows = [dict(ONE_VS_N[0]), dict(ONE_VS_N[1], rejected=[])]
    with pytest.raises(RecordError, match=r"row 1, field `rejected`: is an empty list"):
        make("softmax_dpo", tiny_model_dir, tmp_path, rows)
    with pytest.raises(RecordError, match=r"row 0, field `chosen`: SoftmaxDPOTrainer needs one `chosen`"):
        make("softmax_dpo", tiny_model_dir, tmp_path, LISTS[:2])


def test_k_above_max_completions_is_refused(tiny_model_dir, tmp_path):
    with pytest.raises(
        RecordError, match=r"row 0, field `completions`: has K=4 completions, more than `max_completions=3`"
    ):
        make("lipo", tiny_model_dir, tmp_path, LISTS, max_completions=3)
    with pytest.raises(RecordError, match=r"row 0, field `rejected`: gives K=4 .* `max_completions=3`"):
        make("softmax_dpo", tiny_model_dir, tmp_path, ONE_VS_N, max_completions=3)


def test_lipo_labels_outside_unit_interval_are_refused(tiny_model_dir, tmp_path):
    rows = [{"prompt": "p", "completions": ["a", "b"], "labels": [0.5, 1.5]}]
    with pytest.raises(RecordError, match=r"row 0, field `labels\[1\]`: must be in \[0, 1\]"):
        make("lipo", tiny_model_dir, tmp_path, rows)
    scored = [{"prompt": "p", "completions": ["a", "b"], "scores": [3.0, -1.0]}]
    with pytest.raises(RecordError, match=r"field `scores\[0\]`: is 3.0, outside \[0, 1\]"):
        make("lipo", tiny_model_dir, tmp_path, scored, score_to_label="identity")
    trainer = make("lipo", tiny_model_dir, tmp_path, scored)  # default: the documented winrate mapping
    labels = trainer.train_dataset[0]["scores"]
    assert labels[0] > 0.5 > labels[1] and labels[0] + labels[1] == pytest.approx(1.0)


def test_lipo_ranks_become_paper_labels(tiny_model_dir, tmp_path):
    rows = [{"prompt": "p", "completions": ["a", "b", "c", "d"], "ranks": [1, 2, 2, 4]}]
    trainer = make("lipo", tiny_model_dir, tmp_path, rows)
    assert trainer.train_dataset[0]["scores"] == pytest.approx([0.875, 0.5, 0.5, 0.125])


def test_lipo_all_equal_labels_are_reported_and_counted(tiny_model_dir, tmp_path, caplog):
    rows = [dict(LISTS[0]), {"prompt": "p", "completions": ["a", "b", "c"], "labels": [0.5, 0.5, 0.5]}]
    with caplog.at_level(logging.WARNING):
        trainer = make("lipo", tiny_model_dir, tmp_path, rows, max_steps=1, per_device_train_batch_size=2)
    assert "1 of 2 lists have all-equal labels" in caplog.text
    trainer.train()
    assert trainer.state.log_history[0]["lipo/lists_without_pairs"] == 1.0


def test_resampled_negatives_with_precomputed_reference_match_the_live_reference(tiny_model_dir, tmp_path):
    """Per-epoch draws pick the matching cached reference values (the cache holds the whole pool)."""
    losses = {}
    for mode in ("model", "precomputed"):
        trainer = make(
            "softmax_dpo",
            tiny_model_dir,
            tmp_path / mode,
            ONE_VS_N[:4],
            ref_mode=mode,
            ref_cache_dir=str(tmp_path / "cache"),
            num_negatives=1,
            resample_negatives_each_epoch=True,
            max_steps=-1,
            num_train_epochs=3,
        )
        trainer.train()
        losses[mode] = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses["model"]) == 3
    assert losses["model"] == pytest.approx(losses["precomputed"], abs=1e-5)
