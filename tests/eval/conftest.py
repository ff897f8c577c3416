"""Fixtures for the evaluation tests: a tiny model whose tokenizer is trained on the TOFU texts.

The model is random (untrained): the tests check that numbers are computed as specified and that
code paths agree with each other, not that a model is good.
"""

from __future__ import annotations

import json

import pytest


def _texts(path, limit=None) -> list[str]:
    out = []
    with open(path) as f:
        for i, line in enumerate(f):
            if limit is not None and i >= limit:
                break
            row = json.loads(line)
            for key in ("question", "answer", "paraphrased_answer", "paraphrased_question"):
                if isinstance(row.get(key), str):
                    out.append(row[key])
            out += list(row.get("perturbed_answer") or [])
    return out


@pytest.fixture(scope="session")
def tofu_texts(tofu_dir) -> list[str]:
    """The texts the TOFU tests evaluate on: forget01, the first 40 retain rows, RA, WF."""
    return (
        _texts(tofu_dir / "forget01_perturbed.json")
        + _texts(tofu_dir / "retain_perturbed.json", limit=40)
        + _texts(tofu_dir / "real_authors_perturbed.json")
        + _texts(tofu_dir / "world_facts_perturbed.json")
    )


@pytest.fixture(scope="session")
def tofu_model_dir(tofu_texts, tmp_path_factory):
    from alignkit.models import build_tiny_model

    return build_tiny_model(tofu_texts, tmp_path_factory.mktemp("tofu_tiny"), vocab_size=512, seed=0)


@pytest.fixture(scope="session")
def tofu_retain_dir(tofu_texts, tmp_path_factory):
    """A second tiny model (another seed, same tokenizer): a stand-in for a retain model."""
    from alignkit.models import build_tiny_model

    return build_tiny_model(tofu_texts, tmp_path_factory.mktemp("tofu_tiny_retain"), vocab_size=512, seed=1)


@pytest.fixture(scope="session")
def tofu_model(tofu_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tofu_model_dir).eval()


@pytest.fixture(scope="session")
def tofu_tokenizer(tofu_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tofu_model_dir)
