"""Gradient-entanglement monitor (spec methods-alignment.md §6.2): spec vectors, equality with a direct
autograd computation on the probe pairs, and a run that is bit-identical with and without it."""

from __future__ import annotations

import pytest
import torch
from trainer_helpers import FORGET, RETAIN, snapshot, train_args
from transformers import AutoModelForCausalLM

from alignkit import get_method
from alignkit.losses.entanglement import entanglement_stats
from alignkit.trainers.entanglement import EntanglementMonitor

D = torch.float64


def test_spec_vectors():
    s = entanglement_stats(torch.tensor([1.0, 2, 0], dtype=D), torch.tensor([2.0, 1, 1], dtype=D))
    assert s["ip"] == 4 and s["cos"] == pytest.approx(0.7302967433, abs=1e-9)
    assert (s["norm_w2"], s["norm_l2"]) == (5, 6)
    assert (s["kappa_w"], s["kappa_l"]) == pytest.approx((0.8, 0.6666666667)) and s["case"] == "ideal"
    assert (s["move_w"], s["move_l"]) == (1, -2)
    assert (s["norm_move_w"], s["norm_move_l"]) == pytest.approx((0.6030748156, -0.6606353608), abs=1e-9)
    s = entanglement_stats(torch.tensor([1.0, 0], dtype=D), torch.tensor([2.0, 1], dtype=D))
    assert s["ip"] == 2 and s["cos"] == pytest.approx(0.8944271910, abs=1e-9)
    assert (s["kappa_w"], s["kappa_l"]) == pytest.approx((2.0, 0.4)) and s["case"] == "both_down"
    assert s["chosen_up"] == 0 and s["rejected_down"] == 1


def test_spec_autograd_toy():
    W = torch.tensor([[0.5, -1.0], [0.2, 0.3], [-0.4, 0.8]], dtype=D, requires_grad=True)
    lp = torch.log_softmax(W @ torch.tensor([1.0, 0.5], dtype=D), -1)
    assert lp.tolist() == pytest.approx([-1.2293678673, -0.8793678673, -1.2293678673], abs=1e-9)
    (g_w,) = torch.autograd.grad(lp[0], W, retain_graph=True)
    (g_l,) = torch.autograd.grad(lp[1], W)
    assert g_w.reshape(-1).tolist() == pytest.approx(
        [0.7075225962, 0.3537612981, -0.4150451924, -0.2075225962, -0.2924774038, -0.1462387019], abs=1e-9
    )
    s = entanglement_stats(g_w, g_l)
    assert s["ip"] == pytest.approx(-0.4552175263, abs=1e-9) and s["cos"] == pytest.approx(
        -0.5837053038, abs=1e-9
    )
    assert (s["norm_w2"], s["norm_l2"]) == pytest.approx((0.9479922095, 0.6415727380), abs=1e-9)
    assert s["case"] == "ideal"


PAIRS = [
    {
        "prompt": "Where was the author born?",
        "chosen": "The author was born in Paris.",
        "rejected": "I don't know.",
    },
    {
        "prompt": "Recommend a movie.",
        "chosen": "A quiet drama about the sea.",
        "rejected": "A loud action film.",
    },
]


def test_monitor_equals_direct_autograd(tiny_model_dir, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    monitor = EntanglementMonitor(PAIRS + [(RETAIN[0], FORGET[0])])
    from alignkit.data import PreferenceCollator

    monitor.collator = PreferenceCollator(tokenizer)
    got = monitor.measure(model)
    # Direct: one padded batch per probe item, each row's summed answer log-prob differentiated by itself.
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    expected, logps = [], []
    for rows in ([PAIRS[0]], [PAIRS[1]], [RETAIN[0], FORGET[0]]):
        with torch.enable_grad():
            seq, _ = _answer_logps_with_grad(model, tokenizer, rows)
            logps.append(seq.tolist())
            g = [
                torch.cat([x.reshape(-1) for x in torch.autograd.grad(seq[i], params, retain_graph=True)])
                for i in (0, 1)
            ]
        expected.append(entanglement_stats(g[0], g[1]))
    for key in ("ip", "cos", "norm_w2", "norm_l2", "kappa_w", "kappa_l", "move_w", "move_l"):
        want = sum(e[key] for e in expected) / 3
        assert got[f"entanglement/{key}"] == pytest.approx(want, rel=1e-4, abs=1e-6), key
    # The probe pairs' own log-probs: what the first-order moves add up to over a run.
    for key, i in (("logp_w", 0), ("logp_l", 1)):
        assert got[f"entanglement/{key}"] == pytest.approx(sum(lp[i] for lp in logps) / 3, rel=1e-5), key
    assert got["entanglement/num_params"] == sum(p.numel() for p in params)
    assert abs(got["entanglement/cos"]) > 1e-3  # not a degenerate all-zero measurement


def _answer_logps_with_grad(model, tokenizer, rows):
    from alignkit.data import PreferenceCollator

    batch = PreferenceCollator(tokenizer)(rows)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    token = torch.log_softmax(logits.float(), -1).gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    mask = batch["completion_mask"][:, 1:].float()
    return (token * mask).sum(-1), mask.sum(-1)


def test_monitor_does_not_change_the_run(unlearn_model_dir, unlearn_tokenizer, tmp_path):
    spec = get_method("npo")
    weights, monitors = [], []
    for i, callbacks in enumerate(
        ([], [EntanglementMonitor([(RETAIN[1], FORGET[1]), (RETAIN[2], FORGET[2])], every=1)])
    ):
        trainer = spec.trainer_cls(
            model=AutoModelForCausalLM.from_pretrained(unlearn_model_dir),
            args=train_args(spec, tmp_path / str(i), max_steps=3),
            train_dataset=FORGET,
            processing_class=unlearn_tokenizer,
            callbacks=callbacks,
        )
        trainer.train()
        weights.append(snapshot(trainer.model))
        monitors.append(callbacks)
    assert all(torch.equal(weights[0][n], weights[1][n]) for n in weights[0])
    (monitor,) = monitors[1]
    assert [h["step"] for h in monitor.history] == [0, 1, 2, 3]
    assert monitor.history[0]["entanglement/cos"] != monitor.history[-1]["entanglement/cos"]
