"""check_values reads nullability from the class's own annotations, so it survives HfArgumentParser."""

import dataclasses

from transformers import HfArgumentParser

from alignkit.trainers.softmax_dpo import SoftmaxDPOConfig


def test_null_allowed_field_stays_nullable_after_a_parser_was_built(tmp_path):
    # HfArgumentParser rewrites Field.type in place (``int | None`` -> ``int``); a CLI run followed by a
    # Python-API config in the same process refused num_negatives=None ("must be set (got null)").
    HfArgumentParser(SoftmaxDPOConfig)
    (field,) = [f for f in dataclasses.fields(SoftmaxDPOConfig) if f.name == "num_negatives"]
    assert field.type is int  # the rewrite this test guards against really happened
    assert SoftmaxDPOConfig(output_dir=str(tmp_path), num_negatives=None).num_negatives is None
