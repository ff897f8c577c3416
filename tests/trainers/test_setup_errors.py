"""Impossible set-ups are refused at construction, before any data is encoded or any forward runs."""

from __future__ import annotations

import pytest
from peft import LoraConfig
from trainer_helpers import FORGET, RETAIN, train_args
from transformers import AutoModelForCausalLM, TrainingArguments

from alignkit import get_method
from alignkit.trainers import METHODS, AlignKitTrainer, GAConfig, NPOConfig, NPOTrainer


@pytest.fixture(autouse=True)
def no_compute(monkeypatch):
    """Encoding or a forward during a refused construction is itself a failure."""

    def refuse(*args, **kwargs):
        raise AssertionError("compute ran before the set-up check")

    monkeypatch.setattr(AlignKitTrainer, "_encode", refuse)
    monkeypatch.setattr("alignkit.trainers.base.row_outputs", refuse)
    monkeypatch.setattr("alignkit.trainers.base.with_ref_logps", refuse)


def build(name, model_dir, tokenizer, tmp_path, *, train=FORGET, retain=None, **kw):
    spec = get_method(name)
    peft_config = kw.pop("peft_config", None)
    ref_model = kw.pop("ref_model", None)
    args = train_args(spec, tmp_path, **kw)
    return spec.trainer_cls(
        model=AutoModelForCausalLM.from_pretrained(model_dir),
        args=args,
        train_dataset=train,
        retain_dataset=retain,
        processing_class=tokenizer,
        peft_config=peft_config,
        ref_model=ref_model,
    )


CASES = {
    "adapter_off without PEFT": (
        dict(name="npo", ref_mode="adapter_off"),
        r"ref_mode='adapter_off'` needs a PEFT model",
    ),
    "empty forget set": (dict(name="npo", train=[]), r"`train_dataset` \(the forget set\) is empty"),
    "missing forget set": (
        dict(name="ga", train=None),
        r"`train_dataset` \(the forget set\) is empty or missing",
    ),
    "retain_loss without retain set": (dict(name="npo_rt"), r"`retain_loss='nll'` needs a `retain_dataset`"),
    "retain KL without retain set": (dict(name="ga_kl"), r"`retain_loss='kl'` needs a `retain_dataset`"),
    "empty retain set": (dict(name="npo_rt", retain=[]), r"`retain_dataset` is empty"),
    "precomputed with dipo (logits)": (
        dict(name="dipo", ref_mode="precomputed"),
        r"ref_mode='precomputed'` caches one sequence log-prob",
    ),
    "precomputed with npo_kl (retain KL)": (
        dict(name="npo_kl", ref_mode="precomputed", retain=RETAIN),
        r"ref_mode='precomputed'` caches one sequence log-prob",
    ),
    "precomputed with token-level catnip": (
        dict(name="catnip", ref_mode="precomputed", anchor="ref"),
        r"ref_mode='precomputed'` caches one sequence log-prob",
    ),
    "ref_mode none for NPO": (dict(name="npo", ref_mode="none"), r"needs reference log-probs.*'none'"),
    "ref_mode none for GA+KL": (
        dict(name="ga_kl", ref_mode="none", retain=RETAIN),
        r"needs reference log-probs.*retain_loss='kl'",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_refused_at_construction(case, tiny_model_dir, tokenizer, tmp_path):
    kwargs, message = CASES[case]
    kwargs = dict(kwargs)
    name = kwargs.pop("name")
    with pytest.raises(ValueError, match=message):
        build(name, tiny_model_dir, tokenizer, tmp_path, **kwargs)


def test_ref_model_that_would_be_ignored(tiny_model_dir, tokenizer, tmp_path):
    ref = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    with pytest.raises(ValueError, match=r"a `ref_model` was passed but `ref_mode='adapter_off'`"):
        build(
            "npo",
            tiny_model_dir,
            tokenizer,
            tmp_path,
            ref_mode="adapter_off",
            peft_config=lora,
            ref_model=ref,
        )


@pytest.mark.parametrize("name", sorted(METHODS))
def test_wrong_args_type(name, tiny_model_dir, tokenizer, tmp_path):
    """Plain ``TrainingArguments`` (or another method's config) is a type error, raised before any compute."""
    cls = get_method(name).trainer_cls
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    with pytest.raises(TypeError, match=rf"{cls.__name__} needs `args` of type {cls.config_class.__name__}"):
        cls(
            model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
            args=args,
            train_dataset=FORGET,
            processing_class=tokenizer,
        )


def test_other_methods_config_is_refused(tiny_model_dir, tokenizer, tmp_path):
    args = GAConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    with pytest.raises(TypeError, match=r"NPOTrainer needs `args` of type NPOConfig, got GAConfig"):
        NPOTrainer(
            model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
            args=args,
            train_dataset=FORGET,
            processing_class=tokenizer,
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(ref_mode="frozen"), r"`ref_mode` must be one of"),
        (dict(retain_loss="mse"), r"`retain_loss` must be one of"),
        (dict(beta=0.0), r"`beta` must be > 0"),
        (dict(retain_weight=-1.0), r"must be >= 0"),
        (dict(max_length=0), r"`max_length` must be a positive integer"),
    ],
)
def test_config_values_refused(kwargs, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        NPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", **kwargs)
