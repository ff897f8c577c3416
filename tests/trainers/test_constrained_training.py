"""The constraint wrapper in the trainer core (spec methods-alignment.md §5.3, methods-unlearning.md §10).

Runs on the tiny memorised model of ``conftest.unlearn_model_dir``: NPO alone wrecks the retain set;
with a retain-NLL constraint the multiplier rises while the constraint is violated, pulls the retain
NLL back under eps, then falls. Multipliers move once per optimizer step, survive a kill/resume
exactly, and a constraint the method cannot compute fails at construction.
"""

from __future__ import annotations

import json
import logging

import pytest
import torch
from trainer_helpers import FORGET, RETAIN, mean_token_logp, train_args
from transformers import AutoModelForCausalLM, TrainerCallback

from alignkit import get_method
from alignkit.losses import nll_loss
from alignkit.trainers.constraints import REPORT_FILE, STATE_KEY, Constraint

EPS = 0.3


def make(model_dir, tokenizer, out, method="npo", retain=True, constraints=None, py_constraints=None, **kw):
    spec = get_method(method)
    kw.setdefault("lr_scheduler_type", "constant")
    args = train_args(spec, out, constraints=constraints, **kw)
    return spec.trainer_cls(
        model=AutoModelForCausalLM.from_pretrained(model_dir),
        args=args,
        train_dataset=FORGET,
        retain_dataset=RETAIN if retain else None,
        processing_class=tokenizer,
        constraints=py_constraints,
    )


def history(trainer, name="retain_nll"):
    return [
        (h["step"], h[f"constraint/{name}/lambda"], h[f"constraint/{name}/value"])
        for h in trainer.state.log_history
        if f"constraint/{name}/lambda" in h
    ]


@pytest.mark.slow
def test_npo_with_retain_constraint_stays_within_eps_unconstrained_does_not(
    unlearn_model_dir, unlearn_tokenizer, tmp_path
):
    """30 steps of NPO at lr 1e-3. Unconstrained: retain NLL per token goes from ~0.02 to ~9.
    Constrained (retain_nll <= 0.3, dual_lr 2): ends within eps + 0.05 slack (measured: 0.04)."""
    plain = make(unlearn_model_dir, unlearn_tokenizer, tmp_path / "plain", retain=False, max_steps=30)
    plain.train()
    unconstrained = -mean_token_logp(plain.model, unlearn_tokenizer, RETAIN)

    cons = [{"fn": "retain_nll", "eps": EPS, "dual_lr": 2.0}]
    run = make(unlearn_model_dir, unlearn_tokenizer, tmp_path / "cons", constraints=cons, max_steps=30)
    run.train()
    constrained = -mean_token_logp(run.model, unlearn_tokenizer, RETAIN)
    steps = history(run)
    print(
        f"\nretain NLL/token: unconstrained {unconstrained:.3f}, constrained {constrained:.3f}; (step, lam, g) {steps}"
    )
    assert unconstrained > 3 * EPS
    assert constrained <= EPS + 0.05
    # It still forgets: the forget answers lost log-likelihood.
    assert -mean_token_logp(run.model, unlearn_tokenizer, FORGET) > 1.0
    # lam rose while violated, and fell once the constraint held again.
    lams = [lam for _, lam, _ in steps]
    peak = lams.index(max(lams))
    assert max(lams) > 0 and lams[-1] < max(lams)
    for (_, lam, g), (_, nxt, _) in zip(steps, steps[1:]):
        if g > EPS:
            assert nxt > lam or nxt == 100.0
        elif lam > 0:
            assert nxt < lam
    assert any(g > EPS for _, _, g in steps[: peak + 1])
    report = json.loads((tmp_path / "cons" / REPORT_FILE).read_text())
    assert report[0]["name"] == "retain_nll" and report[0]["held"] and run.constraint_report == report


class RecordMicro(TrainerCallback):
    def __init__(self):
        self.lams = []

    def on_step_end(self, args, state, control, **kwargs):
        self.lams.append(list(self.trainer.constraints.multipliers))


def test_updates_once_per_optimizer_step_from_the_micro_batch_mean(
    unlearn_model_dir, unlearn_tokenizer, tmp_path
):
    """Gradient accumulation 2: one dual update per optimizer step, driven by the mean of the two micro-batch
    values, each recomputed here with an independent forward."""
    cons = [{"fn": "retain_nll", "eps": 0.0, "dual_lr": 1.0, "lam_init": 0.5}]
    trainer = make(unlearn_model_dir, unlearn_tokenizer, tmp_path, constraints=cons, max_steps=1,
                   per_device_train_batch_size=2, gradient_accumulation_steps=2, learning_rate=0.0)  # fmt: skip
    seen = []
    original = trainer.constraints.values

    def spy(out, tr):
        v = original(out, tr)
        seen.append(nll_loss(out.retain.token_logps, out.retain.mask).loss.item())
        return v

    trainer.constraints.values = spy
    trainer.train()
    assert len(seen) == 2
    ((_, lam, g),) = history(trainer)
    assert lam == 0.5 and g == pytest.approx(sum(seen) / 2, rel=1e-6)
    assert trainer.constraints.multipliers == pytest.approx([0.5 + g])
    assert trainer.constraints.duals[0].num_updates == 1


def test_warns_when_eps_is_violated_at_step_0(unlearn_model_dir, unlearn_tokenizer, tmp_path, caplog):
    cons = [{"fn": "retain_nll", "eps": 1e-6, "name": "tight"}]
    trainer = make(unlearn_model_dir, unlearn_tokenizer, tmp_path, constraints=cons, max_steps=1)
    with caplog.at_level(logging.WARNING, logger="alignkit.trainers.constraints"):
        trainer.train()
    (line,) = [r.getMessage() for r in caplog.records if "violated at step 0" in r.getMessage()]
    assert "'tight'" in line and "starting value" in line


def test_relative_bound_is_the_first_step_value_plus_eps(
    unlearn_model_dir, unlearn_tokenizer, tmp_path, caplog
):
    cons = [{"fn": "retain_nll", "eps": 0.1, "relative": True}]
    trainer = make(unlearn_model_dir, unlearn_tokenizer, tmp_path, constraints=cons, max_steps=2)
    with caplog.at_level(logging.WARNING):
        trainer.train()
    first = history(trainer)[0][2]
    assert trainer.constraints.bounds == pytest.approx([first + 0.1])
    assert not any("violated at step 0" in r.getMessage() for r in caplog.records)


def test_python_callable_and_aux_loss_constraints(unlearn_model_dir, unlearn_tokenizer, tmp_path):
    """A callable reads the ForwardOutput; aux_loss draws its own rows (the retain set here)."""

    def forget_logp(out):
        return out.policy.seq_logps.mean()

    cons = [{"fn": "aux_loss", "eps": 0.05, "aux_dataset": RETAIN, "aux_batch_size": 2, "dual_lr": 1.0}]
    trainer = make(unlearn_model_dir, unlearn_tokenizer, tmp_path, retain=False, constraints=cons, max_steps=3,
                   py_constraints=[Constraint(fn=forget_logp, eps=0.0, kind="eq", dual_lr=0.1)])  # fmt: skip
    trainer.train()
    (_, _, aux0), *_ = history(trainer, "aux_loss")
    assert 0 < aux0 < 1  # the memorised retain answers: small NLL
    eq = history(trainer, "forget_logp")
    assert eq[0][1] == 0 and eq[1][1] == pytest.approx(0.1 * eq[0][2]) and eq[1][1] < 0  # no lower clip


class StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True


def test_kill_and_resume_continues_multipliers_and_smoothing_exactly(
    unlearn_model_dir, unlearn_tokenizer, tmp_path
):
    cons = [
        {"fn": "retain_nll", "eps": 0.005, "dual_lr": 2.0, "smoothing": "ema", "ema_decay": 0.7},
        {"fn": "retain_nll", "name": "windowed", "eps": 0.05, "dual_lr": 1.0, "smoothing": "window", "window": 3,
         "update": "log", "lam_init": 0.5},
    ]  # fmt: skip
    kw = dict(
        max_steps=6, per_device_train_batch_size=2, save_strategy="steps", save_steps=3, constraints=cons
    )
    straight = make(unlearn_model_dir, unlearn_tokenizer, tmp_path / "a", **kw)
    straight.train()
    killed = make(unlearn_model_dir, unlearn_tokenizer, tmp_path / "b", **kw)
    killed.add_callback(StopAt(3))
    killed.train()
    saved = json.loads((tmp_path / "b" / "checkpoint-3" / "trainer_state.json").read_text())
    assert saved["stateful_callbacks"][STATE_KEY]["duals"][1][
        "recent"
    ]  # the window travels with the checkpoint
    resumed = make(unlearn_model_dir, unlearn_tokenizer, tmp_path / "b", **kw)
    resumed.train(resume_from_checkpoint=True)
    a, b = straight.constraints.state_dict(), resumed.constraints.state_dict()
    assert a == b  # multipliers, EMA estimate, window contents, counters: exactly equal
    for name in ("retain_nll", "windowed"):
        assert history(straight, name) == history(resumed, name)  # steps 1-3 come from the checkpoint's log
    assert all(lam > 0 for _, lam, _ in history(straight)[1:])  # the constraint was active throughout
    assert torch.equal(
        straight.model.get_input_embeddings().weight, resumed.model.get_input_embeddings().weight
    )


@pytest.mark.parametrize(
    "method, constraints, retain, match",
    [
        ("npo", [{"fn": "chosen_logp_floor", "eps": 0.1}], True, "reads the 'chosen' completions.*'answer'"),
        ("npo", [{"fn": "retain_nll", "eps": 0.1}], False, "retain constraint.*needs a `retain_dataset`"),
        ("ga", [{"fn": "logratio_budget", "eps": 1.0}], True, None),
    ],
)
def test_constraint_the_method_cannot_compute_fails_at_construction(
    unlearn_model_dir, unlearn_tokenizer, tmp_path, method, constraints, retain, match
):
    if match is None:  # GA has no reference; the budget asks for one, so the core provides it.
        trainer = make(
            unlearn_model_dir, unlearn_tokenizer, tmp_path, method, retain, constraints, max_steps=1
        )
        assert trainer.ref_mode == "model"
        return
    with pytest.raises(ValueError, match=match):
        make(unlearn_model_dir, unlearn_tokenizer, tmp_path, method, retain, constraints)


@pytest.mark.parametrize(
    "entry, match",
    [
        ({"fn": "retain_nl", "eps": 1}, "unknown `fn`"),
        ({"fn": "retain_nll"}, r"constraints\[0\]: expected a mapping with at least `fn` and `eps`"),
        ({"fn": "retain_nll", "eps": 1, "dual_rate": 1}, r"constraints\[0\]: unknown key 'dual_rate'"),
        ({"fn": "retain_nll", "eps": 1, "update": "log"}, "needs `lam_init > 0`"),
        ({"fn": "chosen_logp_floor", "eps": 1, "relative": True}, "`relative: true` applies to"),
    ],
)
def test_bad_constraint_entries_fail_in_the_config(entry, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        get_method("npo").make_config(output_dir=str(tmp_path), constraints=[entry])
