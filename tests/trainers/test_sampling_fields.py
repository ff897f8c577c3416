"""Every self-sampling method's sampling flags come from one definition (``sampling_fields``) and keep
their names and defaults; each flag reaches the shared sampler's settings."""

from __future__ import annotations

import dataclasses

import pytest
from transformers import HfArgumentParser

from alignkit import get_method

# The flags and defaults each config had before the fields were made by one definition.
EXPECTED = {
    "d2o": {
        "num_samples": 11, "sample_temperature": 1.0, "sample_top_k": 0, "sample_top_p": 1.0,
        "sample_max_new_tokens": 64, "sample_instruction_prefix": None, "sample_batch_size": 16,
        "sample_cache_dir": None,
    },
    "altpo": {
        "num_alternates": 5, "alternate_temperature": 1.0, "alternate_top_p": 1.0, "alternate_top_k": 0,
        "alternate_max_new_tokens": 200, "alternate_seed": 0, "alternate_batch_size": 8,
        "sample_cache_dir": None,
    },
    **{
        method: {
            "num_samples": 8, "sample_temperature": 1.0, "sample_top_p": 1.0, "sample_top_k": 0,
            "sample_max_new_tokens": 256, "sample_batch_size": 16, "sample_cache_dir": None,
            "verifier": None,
        }
        for method in ("aft", "rrhf", "pro")
    },
}  # fmt: skip
# flag -> (value given on the command line, the SamplingSettings field it must set)
GIVEN = {
    "num_samples": ("3", "num_samples", 3),
    "num_alternates": ("3", "num_samples", 3),
    "temperature": ("0.5", "temperature", 0.5),
    "top_k": ("7", "top_k", 7),
    "top_p": ("0.9", "top_p", 0.9),
    "max_new_tokens": ("9", "max_new_tokens", 9),
    "instruction_prefix": ("Be kind. ", "instruction_prefix", "Be kind. "),
    "seed": ("5", "seed", 5),
    "batch_size": ("2", "batch_size", 2),
}


def _config_class(method):
    return get_method(method).trainer_cls.config_class


@pytest.mark.parametrize("method", sorted(EXPECTED))
def test_flags_and_defaults_are_unchanged(method, tmp_path):
    cls = _config_class(method)
    names = {f.name for f in dataclasses.fields(cls)}
    assert set(EXPECTED[method]) <= names
    config = cls(output_dir=str(tmp_path))
    assert {name: getattr(config, name) for name in EXPECTED[method]} == EXPECTED[method]


@pytest.mark.parametrize("method", sorted(EXPECTED))
def test_every_sampling_flag_reaches_the_sampler(method, tmp_path):
    cls = _config_class(method)
    argv, want = ["--output_dir", str(tmp_path), "--seed", "11"], {}
    for name in EXPECTED[method]:
        suffix = name.removeprefix("sample_").removeprefix("alternate_")
        if suffix in GIVEN:
            text, setting, value = GIVEN[suffix]
            argv += [f"--{name}", text]
            want[setting] = value
    (config,) = HfArgumentParser(cls).parse_args_into_dataclasses(argv)
    settings = config.sampling_settings()
    assert {k: getattr(settings, k) for k in want} == want
    if "alternate_seed" not in EXPECTED[method]:  # D2O and AFT draw with the run's seed
        assert settings.seed == 11


@pytest.mark.parametrize(
    "method, flag, value",
    [("d2o", "sample_top_p", 1.5), ("altpo", "alternate_temperature", 0.0), ("aft", "sample_max_new_tokens", 0)],
)  # fmt: skip
def test_a_bad_sampling_value_names_the_config_field(method, flag, value, tmp_path):
    with pytest.raises(ValueError, match=f"^`{flag}` must be"):
        _config_class(method)(output_dir=str(tmp_path), **{flag: value})
