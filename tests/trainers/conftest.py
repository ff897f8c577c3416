"""Fixtures for the trainer tests: quiet logs, and a tiny model with something to unlearn.

Data and helpers shared by several files live in ``trainer_helpers.py`` beside this file.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="package", autouse=True)
def _quiet():
    """No progress bars from `datasets` and `transformers` (a few thousand lines otherwise)."""
    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    yield
    datasets.enable_progress_bars()
    hf_logging.enable_progress_bar()


@pytest.fixture(scope="session")
def unlearn_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model fine-tuned until it has memorised FORGET and RETAIN: something to unlearn.

    A random model gives every answer a log-prob near -6 per token; there the bounded losses
    (SimNPO, NPO's sigmoid weight) have almost no gradient and "forgetting" means nothing. After
    100 steps at lr 3e-3 (high: a 64-wide random model, a few seconds on one CPU thread) the
    answers sit at about -0.02 nats per token, as a fine-tuned TOFU target model does.
    """
    from trainer_helpers import FORGET, RETAIN, train_args
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignkit import get_method

    out = tmp_path_factory.mktemp("unlearn_model")
    spec = get_method("finetune")
    args = train_args(
        spec,
        out / "run",
        max_steps=100,
        learning_rate=3e-3,
        lr_scheduler_type="constant",
        per_device_train_batch_size=8,
        logging_steps=50,
    )
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    trainer = spec.trainer_cls(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        args=args,
        train_dataset=FORGET + RETAIN,
        processing_class=tokenizer,
    )
    trainer.train()
    trainer.save_model(str(out))
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def unlearn_tokenizer(unlearn_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(unlearn_model_dir)
