"""U2A as a weighting of GA / GradDiff / NPO: the weight update against an independent autograd
computation on a tiny model, the identities of §7(b) (iv)-(v), selection, and exact resume."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from trainer_helpers import FORGET, RETAIN, StopAt, snapshot, train_args
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignkit import get_method
from alignkit.data import PreferenceCollator
from alignkit.trainers.u2a import HISTOGRAM_FILE, U2AArguments, with_u2a

# Validation pairs: a correct answer preferred over a wrong one (retain topics).
VALIDATION = [
    {"prompt": "What colour is the sky?", "chosen": "The sky is blue.", "rejected": "The sky is green."},
    {"prompt": "What colour is the snow?", "chosen": "The snow is white.", "rejected": "The snow is black."},
    {"prompt": "What colour is the sun?", "chosen": "The sun is yellow.", "rejected": "The sun is pink."},
]


def make(method, model_dir, tmp_path, u2a, rows=FORGET[:4], **overrides):
    spec = get_method(method)
    args = train_args(spec, tmp_path, **overrides)
    cls = with_u2a(spec.trainer_cls)
    return cls(
        model=AutoModelForCausalLM.from_pretrained(model_dir),
        args=args,
        train_dataset=rows,
        retain_dataset=RETAIN if getattr(args, "retain_loss", "none") != "none" else None,
        processing_class=AutoTokenizer.from_pretrained(model_dir),
        u2a_validation=VALIDATION,
        u2a=u2a,
    )


def summed_logps(model, tokenizer, rows):
    """Summed and token-mean completion log-probs per row, from a plain forward (with gradient)."""
    batch = PreferenceCollator(tokenizer)(rows)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    token = F.log_softmax(logits.float(), -1).gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    mask = batch["completion_mask"][:, 1:].float()
    return (token * mask).sum(-1), (token * mask).sum(-1) / mask.sum(-1)


@pytest.mark.parametrize("method", ["ga", "npo"])
def test_weight_update_matches_independent_autograd(method, unlearn_model_dir, tmp_path):
    """Scores I_i = <grad J, grad l_i> and the weights exp(eta I) / mean, recomputed here by hand."""
    trainer = make(method, unlearn_model_dir, tmp_path, U2AArguments(refresh_every=100, weight_lr=50.0))
    tokenizer = trainer.processing_class
    start = copy.deepcopy(trainer.model).eval()
    policy = copy.deepcopy(trainer.model).eval()
    trainer.u2a_refresh(0)

    params = [p for p in policy.parameters() if p.requires_grad]
    pairs = [{"prompt": r["prompt"], "completion": r[k]} for r in VALIDATION for k in ("chosen", "rejected")]
    with torch.no_grad():
        ref, _ = summed_logps(start, tokenizer, pairs)
    seq, _ = summed_logps(policy, tokenizer, pairs)
    margin = (seq[0::2] - ref[0::2]) - (seq[1::2] - ref[1::2])
    objective = -F.logsigmoid(0.3 * margin).mean()
    g_j = torch.cat([g.flatten() for g in torch.autograd.grad(objective, params)])
    expected = []
    for row in FORGET[:4]:
        qa = [row]  # question/answer: rendered with the prompt format, as the trainer encodes it
        total, token_mean = summed_logps(policy, tokenizer, qa)
        if method == "ga":
            loss = token_mean[0]
        else:
            with torch.no_grad():
                total_ref, _ = summed_logps(start, tokenizer, qa)
            loss = 2 / 0.1 * F.softplus(0.1 * (total[0] - total_ref[0]))
        g_i = torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)])
        expected.append(float(g_j @ g_i))
    expected = torch.tensor(expected, dtype=torch.float64)
    state = trainer.u2a_state
    assert state.objective == pytest.approx(float(objective.detach()), rel=1e-5)
    assert expected.abs().max() > 1e-6, "vanishing scores would make the comparison vacuous"
    torch.testing.assert_close(state.scores[:4], expected, rtol=1e-3, atol=1e-7)
    weights = torch.exp(50.0 * expected)
    torch.testing.assert_close(state.weights[:4], weights / weights.mean(), rtol=1e-3, atol=1e-6)
    assert not torch.allclose(state.weights[:4], torch.ones(4, dtype=torch.float64), atol=1e-3)


def test_no_weight_step_and_everything_kept_is_the_base_method(unlearn_model_dir, tmp_path):
    """§7(b)(iv): weight_lr 0 and k = |F| train exactly as NPO does (same steps, same parameters)."""
    spec = get_method("npo")
    plain = spec.trainer_cls(
        model=AutoModelForCausalLM.from_pretrained(unlearn_model_dir),
        args=train_args(spec, tmp_path / "plain", max_steps=3, per_device_train_batch_size=2),
        train_dataset=FORGET[:4],
        processing_class=AutoTokenizer.from_pretrained(unlearn_model_dir),
    )
    plain.train()
    weighted = make(
        "npo",
        unlearn_model_dir,
        tmp_path / "u2a",
        U2AArguments(refresh_every=2, weight_lr=0.0),
        max_steps=3,
        per_device_train_batch_size=2,
    )
    weighted.train()
    assert torch.equal(weighted.u2a_state.weights[:4], torch.ones(4, dtype=torch.float64))
    for (name, p), q in zip(plain.model.named_parameters(), weighted.model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6, msg=name)


def test_selection_keeps_top_k_and_the_sign_switch(unlearn_model_dir, tmp_path):
    weights = {}
    for update in ("derivation", "official"):
        trainer = make(
            "graddiff",
            unlearn_model_dir,
            tmp_path / update,
            U2AArguments(refresh_every=100, top_k=2, weight_lr=50.0, weight_update=update),
        )
        trainer.u2a_refresh(0)
        state = trainer.u2a_state
        scores = state.scores[:4]
        top = torch.argsort(scores, descending=True)[:2]
        assert state.kept[:4].nonzero().flatten().sort().values.tolist() == sorted(top.tolist())
        assert (state.weights[:4][~state.kept[:4]] == 0).all()
        assert state.weights[state.kept].mean().item() == pytest.approx(1.0)
        weights[update] = state.weights[top]
    # derivation up-weights the higher score; the official step does the opposite
    assert weights["derivation"][0] > weights["derivation"][1]
    assert weights["official"][0] < weights["official"][1]


def test_weighted_loss_is_the_manual_mean_and_logged(unlearn_model_dir, tmp_path):
    """§7(b)(v): the trained loss is mean(w * l) with the refreshed weights; the histogram is written."""
    trainer = make(
        "ga",
        unlearn_model_dir,
        tmp_path,
        U2AArguments(refresh_every=1, weight_lr=50.0),
        max_steps=1,
        per_device_train_batch_size=4,
        optim="sgd",
        learning_rate=0.0,
        train_sampling_strategy="sequential",
    )
    with torch.no_grad():
        _, per_example = summed_logps(trainer.model, trainer.processing_class, FORGET[:4])
    trainer.train()
    first = trainer.state.log_history[0]
    state = trainer.u2a_state
    manual = float((state.weights[:4] * per_example.double()).mean())
    assert first["loss/method"] == pytest.approx(manual, rel=1e-5)
    assert first["u2a/unweighted"] == pytest.approx(float(per_example.mean()), rel=1e-5)
    assert abs(manual - float(per_example.mean())) > 1e-3, "weights of 1 would make this vacuous"
    # rows of one batch of 4 = the whole forget set; the weights have mean 1 on it
    assert first["u2a/batch_weight"] == pytest.approx(1.0, abs=1e-5)
    for key in ("u2a/J", "u2a/kept", "u2a/influence_mean", "u2a/weight_max", "u2a/weight_min"):
        assert key in first, sorted(first)
    lines = [json.loads(x) for x in (tmp_path / HISTOGRAM_FILE).read_text().splitlines()]
    assert lines[0]["step"] == 0 and sum(lines[0]["histogram"]["counts"]) == 4
    assert lines[0]["weights"]["0"] == pytest.approx(float(state.weights[0]), abs=1e-7)


def test_resume_is_exact(unlearn_model_dir, tmp_path):
    """Straight 4 steps == 2 steps, checkpoint, new trainer resumed: parameters, weights and scores."""
    settings = dict(max_steps=4, per_device_train_batch_size=2, save_strategy="steps", save_steps=2)
    u2a = U2AArguments(refresh_every=3, weight_lr=50.0, top_k=3)
    straight = make("npo", unlearn_model_dir, tmp_path / "straight", u2a, **settings)
    straight.train()
    stopped = make("npo", unlearn_model_dir, tmp_path / "resumed", u2a, **settings)
    stopped.add_callback(StopAt(2))
    stopped.train()
    assert stopped.state.global_step == 2
    resumed = make("npo", unlearn_model_dir, tmp_path / "resumed", u2a, **settings)
    resumed.train(resume_from_checkpoint=True)
    assert resumed.u2a_state.refreshed_at == 3
    for field in ("weights", "scores", "kept"):
        a, b = getattr(straight.u2a_state, field), getattr(resumed.u2a_state, field)
        assert torch.equal(torch.nan_to_num(a.double()), torch.nan_to_num(b.double())), field
    before = snapshot(straight.model)
    for name, p in resumed.model.named_parameters():
        torch.testing.assert_close(p, before[name], rtol=0, atol=1e-6, msg=name)


def test_user_errors(unlearn_model_dir, tmp_path):
    from alignkit.trainers import SoftmaxDPOTrainer

    with pytest.raises(TypeError, match="per_example_loss"):
        with_u2a(SoftmaxDPOTrainer)
    with pytest.raises(ValueError, match="u2a_validation"):
        spec = get_method("ga")
        with_u2a(spec.trainer_cls)(
            model=AutoModelForCausalLM.from_pretrained(unlearn_model_dir),
            args=train_args(spec, tmp_path),
            train_dataset=FORGET,
            processing_class=AutoTokenizer.from_pretrained(unlearn_model_dir),
        )
    with pytest.raises(ValueError, match="weight_update"):
        U2AArguments(weight_update="upstream")


def test_sampler_draws_kept_rows_only(unlearn_model_dir, tmp_path):
    """§7(b): with a selection (top_k) every batch holds kept rows only, so each step carries a full batch
    of unlearning weight (mean weight 1 at weight_lr 0), not a batch diluted by dropped rows."""
    trainer = make(
        "npo",
        unlearn_model_dir,
        tmp_path,
        U2AArguments(refresh_every=100, top_k=2, weight_lr=0.0),
        rows=FORGET[:6],
        max_steps=4,
        per_device_train_batch_size=2,
        logging_steps=1,
    )
    trainer.train()
    state = trainer.u2a_state
    assert int(state.kept.sum()) == 2 and state.refreshed_at == 0
    weights = [h["u2a/batch_weight"] for h in trainer.state.log_history if "u2a/batch_weight" in h]
    assert len(weights) == 4 and all(w == pytest.approx(1.0) for w in weights), weights


def test_u2a_from_config_keys(unlearn_model_dir, tmp_path):
    """The recipe keys `u2a_*` (alignkit train) reach the weighting; a plain trainer refuses `u2a: true`."""
    spec = get_method("graddiff")
    args = train_args(spec, tmp_path, u2a=True, u2a_validation_dataset="pairs.jsonl", u2a_top_k=2)
    trainer = with_u2a(spec.trainer_cls)(
        model=AutoModelForCausalLM.from_pretrained(unlearn_model_dir),
        args=args,
        train_dataset=FORGET[:4],
        retain_dataset=RETAIN,
        processing_class=AutoTokenizer.from_pretrained(unlearn_model_dir),
        u2a_validation=VALIDATION,
    )
    assert trainer.u2a.top_k == 2 and trainer.u2a.refresh_every == 50
    with pytest.raises(ValueError, match=r"with_u2a\(GradDiffTrainer\)"):
        spec.trainer_cls(
            model=AutoModelForCausalLM.from_pretrained(unlearn_model_dir),
            args=args,
            train_dataset=FORGET[:4],
            retain_dataset=RETAIN,
            processing_class=AutoTokenizer.from_pretrained(unlearn_model_dir),
        )
