"""Robustness evaluation: spec2 §9/§10 vectors, the attack split, and the two attacks on real tiny models."""

from __future__ import annotations

import importlib.util
import math
import random

import pytest
import torch

from alignkit.eval.quantization import code_agreement, quantize_model_, rtn_asym, rtn_sym
from alignkit.eval.robustness import (
    RelearnSettings,
    RobustnessResult,
    control_normalised_recovery,
    ratio_to_target,
    recovery,
    relearn,
    tofu_attack_split,
)

D = torch.float64

# ---------------------------------------------------------------------------------------- §9e / §10e


def test_recovery_spec_vectors():
    assert recovery(0.60, 0.10, 0.95) == pytest.approx(0.5882352941, abs=1e-9)
    assert ratio_to_target(0.60, 0.95) == pytest.approx(0.6315789474, abs=1e-9)
    assert control_normalised_recovery(0.60, 0.35, 0.95) == pytest.approx(0.4166666667, abs=1e-9)
    # a loss-type metric (lower = more knowledge): the formula is sign-invariant
    assert recovery(1.2, 3.0, 0.05) == pytest.approx(0.6101694915, abs=1e-9)
    assert math.isnan(recovery(0.5, 0.3, 0.3 + 1e-9))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_attack_split_spec(seed):
    """§9e: |A| = 40, |E| = 360, disjoint, 2 rows of A per author, as random.Random(seed).sample per block."""
    attack, held = tofu_attack_split(400, k=2, seed=seed)
    assert len(attack) == 40 and len(held) == 360 and not set(attack) & set(held)
    assert sorted(attack + held) == list(range(400))
    assert all(sum(1 for i in attack if 20 * b <= i < 20 * b + 20) == 2 for b in range(20))
    rng = random.Random(seed)
    assert attack[:2] == sorted(rng.sample(range(20), 2))


def test_attack_split_errors_are_one_line():
    with pytest.raises(ValueError, match="not a multiple of 20 rows per author"):
        tofu_attack_split(30)
    with pytest.raises(ValueError, match="--attack-k"):
        tofu_attack_split(40, k=20)


W_T = torch.tensor(
    [[0.52, -1.00, 0.26, 0.12, -0.30, 0.70, 0.06, -0.64], [2.00, 0.44, -0.22, 0.92, 1.10, -1.50, 0.00, 0.34]],
    dtype=D,
)
DELTA = torch.tensor(
    [
        [0.003, -0.002, 0.004, 0.001, -0.05, 0.002, -0.001, 0.003],
        [0.0, 0.010, -0.004, 0.002, 0.001, 0.004, 0.002, -0.09],
    ],
    dtype=D,
)
W_U = W_T + DELTA


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rtn_spec_vectors(dtype):
    wt, wu = W_T.to(dtype), W_U.to(dtype)
    deq, codes_t = rtn_sym(wt, 8)
    _, codes_u = rtn_sym(wu, 8)
    assert codes_t.tolist() == [[66, -127, 33, 15, -38, 89, 8, -81], [127, 28, -14, 58, 70, -95, 0, 22]]
    assert codes_u.tolist() == [[66, -127, 33, 15, -44, 89, 7, -81], [127, 29, -14, 59, 70, -95, 0, 16]]
    assert (codes_t == codes_u).double().mean().item() == pytest.approx(0.6875)
    expected_row0 = [
        0.5196850394,
        -1.0,
        0.2598425197,
        0.1181102362,
        -0.2992125984,
        0.7007874016,
        0.0629921260,
        -0.6377952756,
    ]
    torch.testing.assert_close(deq[0].double(), torch.tensor(expected_row0, dtype=D), atol=1e-7, rtol=0)

    _, s_t = rtn_sym(wt, 4, 4)
    _, s_u = rtn_sym(wu, 4, 4)
    assert s_t.tolist() == [[4, -7, 2, 1, -3, 7, 1, -6], [7, 2, -1, 3, 5, -7, 0, 2]]
    assert (s_t != s_u).nonzero().tolist() == [[1, 7]] and s_u[1, 7] == 1
    assert (s_t == s_u).double().mean().item() == pytest.approx(0.9375)

    deq_a, a_t = rtn_asym(wt, 4, 4)
    _, a_u = rtn_asym(wu, 4, 4)
    assert a_t.tolist() == [[15, 0, 13, 11, 4, 15, 8, 0], [15, 4, 0, 7, 15, 0, 9, 11]]
    assert a_u.tolist() == [[15, 0, 13, 11, 3, 15, 8, 0], [15, 5, 0, 8, 15, 0, 9, 10]]
    assert (a_t == a_u).double().mean().item() == pytest.approx(0.75)
    expected_asym = [
        0.5066666667,
        -1.0133333333,
        0.304,
        0.1013333333,
        -0.268,
        0.7146666667,
        0.0893333333,
        -0.6253333333,
    ]
    torch.testing.assert_close(deq_a[0].double(), torch.tensor(expected_asym, dtype=D), atol=1e-6, rtol=0)
    rel = (DELTA.norm() / W_T.norm()).item()
    assert rel == pytest.approx(0.0312985562, abs=1e-9)


def test_robustness_log_round_trip(tmp_path):
    result = RobustnessResult(
        rows={"target": {"forget_prob": 0.9}, "npo@relearn": {"forget_prob": 0.5}},
        recovery={"npo@relearn": {"forget_prob": {"recovery": float("nan"), "ratio_to_target": 0.5}}},
        settings={"forget_split": "forget10"},
    )
    path = result.save(tmp_path)
    back = RobustnessResult.load(path)
    assert back.recovery["npo@relearn"]["forget_prob"]["recovery"] is None  # NaN is written as null
    assert back.table()[1][5] == "—"


# ------------------------------------------------------------------------------- real tiny models

# Forget and retain people share one name pattern and one question/answer template, so a model that never
# saw the forget people knows the format and relearning can only bring back the facts (the cities).
PEOPLE = [f"Person{i}" for i in range(32)]
CITIES = ["Oslo", "Lima", "Cairo", "Quito", "Perth", "Dakar", "Hanoi", "Turin"] * 4
ROWS = [
    {"question": f"Where does {p} live?", "answer": f"They live in {c}."}
    for p, c in zip(PEOPLE, CITIES[::-1])
]
FORGET, RETAIN = ROWS[:16], ROWS[16:]
ATTACK, HELD = FORGET[:4], FORGET[4:]


def _train(method, start, rows, out, steps, lr, retain=None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignkit import get_method

    spec = get_method(method)
    args = spec.make_config(
        output_dir=str(out),
        max_steps=steps,
        learning_rate=lr,
        per_device_train_batch_size=8,
        lr_scheduler_type="constant",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        logging_steps=steps,
        seed=0,
    )
    trainer = spec.trainer_cls(
        model=AutoModelForCausalLM.from_pretrained(start),
        args=args,
        train_dataset=rows,
        retain_dataset=retain,
        processing_class=AutoTokenizer.from_pretrained(start),
    )
    trainer.train()
    trainer.save_model(str(out))
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Target (memorised forget + retain), retain oracle (retain only), GA+RT-unlearned target."""
    from alignkit.models import build_tiny_model

    root = tmp_path_factory.mktemp("robust")
    texts = [r["question"] + " " + r["answer"] for r in FORGET + RETAIN]
    base = build_tiny_model(texts * 3, root / "base", vocab_size=300, seed=0)
    target = _train("finetune", base, FORGET + RETAIN, root / "target", 120, 3e-3)
    retain = _train("finetune", base, RETAIN, root / "retain", 120, 3e-3)
    unlearned = _train("graddiff", target, FORGET, root / "unlearned", 15, 2e-3, retain=RETAIN)
    return {"target": target, "retain": retain, "unlearned": unlearned, "root": root}


def _forget_logp(path_or_model, rows=HELD) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignkit.data import PreferenceCollator

    model = path_or_model
    if not isinstance(model, torch.nn.Module):
        model = AutoModelForCausalLM.from_pretrained(path_or_model)
    tok = AutoTokenizer.from_pretrained(model.config._name_or_path)
    batch = PreferenceCollator(tok)(rows)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    lp = torch.log_softmax(logits.float(), -1).gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    mask = batch["completion_mask"][:, 1:].float()
    return float((lp * mask).sum() / mask.sum())


def test_relearning_brings_back_held_out_forget_rows(models, tmp_path):
    """Fine-tuning on 4 forget rows raises the log-prob of the 12 OTHER forget rows of the unlearned model,
    recovering part of the gap; the retain model (never saw them) under the same attack gains < 0.5 nats/token."""
    target, unlearned = _forget_logp(models["target"]), _forget_logp(models["unlearned"])
    assert target - unlearned > 1.0, (target, unlearned)  # there is something forgotten
    s = RelearnSettings(steps=10, learning_rate=1e-3, batch_size=4)
    attacked = _forget_logp(relearn(models["unlearned"], ATTACK, tmp_path / "a", s, use_cpu=True))
    retain0 = _forget_logp(models["retain"])
    retain1 = _forget_logp(relearn(models["retain"], ATTACK, tmp_path / "r", s, use_cpu=True))
    r = recovery(attacked, unlearned, target)
    report = f"target {target:.3f} unlearned {unlearned:.3f} attacked {attacked:.3f} R {r:.3f}; retain {retain0:.3f} -> {retain1:.3f}"
    assert r > 0.3, report  # measured: R ~0.99 (GA suppressed, relearning on 4 rows brings back the other 12)
    slack = 0.5  # nats/token the control may gain from A (shared cities); measured: -0.1
    assert retain1 - retain0 < slack, report
    assert attacked - unlearned > retain1 - retain0 + slack, report


@pytest.mark.parametrize(
    "pair",
    [
        ("rtn_int8", "rtn_int4"),
        pytest.param(
            ("torchao_int8", "torchao_int4"),
            marks=pytest.mark.skipif(
                importlib.util.find_spec("torchao") is None,
                reason="torchao not installed (optional: pip install 'alignkit[robustness]')",
            ),
        ),
    ],
)
def test_int8_moves_forget_metric_less_than_int4(models, pair):
    from transformers import AutoModelForCausalLM

    full = _forget_logp(models["unlearned"], FORGET)
    shifts = []
    for q in pair:
        model = AutoModelForCausalLM.from_pretrained(models["unlearned"])
        info = quantize_model_(model, q, group_size=32)
        assert info["modules"] == 14  # 7 linears x 2 blocks; lm_head untouched
        shifts.append(abs(_forget_logp(model, FORGET) - full))
    assert 0 < shifts[0] < shifts[1], shifts


def test_code_agreement_of_unlearned_vs_target(models):
    from transformers import AutoModelForCausalLM

    u = AutoModelForCausalLM.from_pretrained(models["unlearned"])
    t = AutoModelForCausalLM.from_pretrained(models["target"])
    int8, int4 = code_agreement(u, t, "rtn_int8", 32), code_agreement(u, t, "rtn_int4_sym", 32)
    assert 0 < int8["rel_weight_change"] < 1
    assert int4["code_agreement"] > int8["code_agreement"]  # coarser buckets: more codes shared
    assert code_agreement(t, t, "rtn_int8")["code_agreement"] == 1.0


@pytest.mark.slow
def test_evaluate_robustness_end_to_end_on_generated_tofu(tmp_path):
    """The whole evaluation on the generated benchmark: retain first (FQ reference), both attacks, the log."""
    from alignkit.data.synthetic.tofu import generate_tofu_benchmark, tofu_texts
    from alignkit.eval.robustness import evaluate_robustness
    from alignkit.models import build_tiny_model

    data = generate_tofu_benchmark(tmp_path / "data", num_people=20, questions_per_person=10, seed=0)
    base = build_tiny_model(tofu_texts(data), tmp_path / "base", vocab_size=400, seed=0)
    from alignkit.data import load_rows

    def rows(split):
        return [{"question": r["question"], "answer": r["answer"]} for r in load_rows(data, split)]

    target = _train("finetune", base, rows("full"), tmp_path / "target", 150, 5e-3)
    retain = _train("finetune", base, rows("retain90"), tmp_path / "retain", 150, 5e-3)
    unlearned = _train("ga", target, rows("forget10"), tmp_path / "ga", 10, 1e-3)
    result = evaluate_robustness(
        {"ga": unlearned},
        target=target,
        retain=retain,
        data=data,
        relearn_settings=RelearnSettings(steps=5, learning_rate=1e-3, batch_size=4, rows_per_author=10),
        quantizers=("rtn_int8", "rtn_int4"),
        group_size=32,
        batch_size=16,
        use_cpu=True,
    )
    assert result.settings["eval_rows"] == 16 and result.settings["attack_rows"] == 4
    assert set(result.rows) >= {
        "retain",
        "target",
        "ga",
        "ga@relearn",
        "retain@relearn",
        "ga@rtn_int8",
        "ga@rtn_int4",
    }
    assert result.rows["retain"]["forget_quality"] == pytest.approx(1.0)
    assert result.rows["ga"]["forget_prob"] < result.rows["target"]["forget_prob"]
    assert result.rows["ga@relearn"]["forget_prob"] > result.rows["ga"]["forget_prob"]
    entry = result.recovery["ga@relearn"]["forget_prob"]
    assert entry["recovery"] == pytest.approx(
        recovery(
            result.rows["ga@relearn"]["forget_prob"],
            result.rows["ga"]["forget_prob"],
            result.rows["target"]["forget_prob"],
        )
    )
    assert "control_normalised" in entry
    assert 0 <= result.diagnostics["ga@rtn_int4"]["code_agreement"] <= 1
    path = result.save(tmp_path / "eval" / "robustness")
    assert RobustnessResult.load(path).rows.keys() == result.rows.keys()

    # The sweep callback: after training, the trained model is attacked and the recovery logged.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignkit import get_method
    from alignkit.eval.robustness import RobustnessCallback

    spec = get_method("ga")
    args = spec.make_config(
        output_dir=str(tmp_path / "sweep"),
        max_steps=3,
        learning_rate=1e-3,
        per_device_train_batch_size=4,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
    )
    trainer = spec.trainer_cls(
        model=AutoModelForCausalLM.from_pretrained(target),
        args=args,
        train_dataset=rows("forget10"),
        processing_class=AutoTokenizer.from_pretrained(target),
        callbacks=[
            RobustnessCallback(
                target=target,
                retain=retain,
                data=data,
                attacks=("quantize",),
                quantizers=("rtn_int4",),
                group_size=32,
                relearn_settings=RelearnSettings(rows_per_author=10),
            )
        ],
    )
    trainer.train()
    assert (tmp_path / "sweep" / "eval" / "robustness" / "ROBUSTNESS.json").is_file()
    assert "robustness/rtn_int4_recovery" in trainer.state.log_history[-1]


def test_report_and_card_read_the_robustness_log(tmp_path):
    """ROBUSTNESS.json beside the TOFU log: `alignkit report` columns and the card's eval results."""
    import json

    from alignkit.eval.logs import find_eval_results
    from alignkit.eval.report import comparison_rows, load_run

    run = tmp_path / "npo"
    (run / "eval" / "tofu").mkdir(parents=True)
    tofu_log = {"forget_quality": {"agg_value": 0.01}, "model_utility": {"agg_value": 0.4}, "alignkit": {}}
    (run / "eval" / "tofu" / "TOFU_EVAL.json").write_text(json.dumps(tofu_log))
    RobustnessResult(
        rows={},
        recovery={
            "npo@relearn": {"forget_prob": {"recovery": 0.25}},
            "npo@torchao_int4": {"forget_prob": {"recovery": 0.5}},
            "retain@relearn": {"forget_prob": {"recovery": 0.9}},  # the control: not the model's figure
        },
        settings={"forget_split": "forget10"},
    ).save(run / "eval" / "robustness")

    header, rows = comparison_rows([load_run(run / "eval" / "tofu")])
    assert rows[0][header.index("relearn R")] == "0.2500" and rows[0][header.index("int4 R")] == "0.5000"
    sources = {s.benchmark: s for s in find_eval_results(run)}
    assert sources["robustness"].metrics == {"relearn_recovery": 0.25, "torchao_int4_recovery": 0.5}
    assert sources["robustness"].dataset_config == "forget10"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--data", "/no/such/folder", "--quantizers", "rtn_int8"], "needs a local TOFU folder"),
        (["--data", ".", "--quantizers", "int3"], "unknown quantizer 'int3'"),
    ],
)
def test_cli_mistakes_are_one_line(extra, message, tmp_path, capsys):
    from alignkit.cli import main

    models = []
    for name in ("m", "t", "r"):  # folders that pass the model check, so the flag under test is reached
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_text("{}")
        (folder / "model.safetensors").write_bytes(b"")
        models.append(str(folder))
    m, t, r = models
    code = main(["eval", "robustness", "--model", m, "--target-model", t, "--retain-model", r, *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
