"""A model or tokenizer path that cannot be loaded is one line naming the argument and the fix."""

from __future__ import annotations

import pytest

from alignkit import get_method
from alignkit.errors import UserError


def make(tmp_path, model, **kwargs):
    spec = get_method("ga")
    args = spec.make_config(output_dir=str(tmp_path / "run"), report_to="none", use_cpu=True)
    return spec.trainer_cls(model, args, train_dataset=[{"question": "q", "answer": "a"}], **kwargs)


def test_folder_without_config(tmp_path):
    folder = tmp_path / "weights_only"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"")
    with pytest.raises(UserError) as info:
        make(tmp_path, str(folder))
    assert str(info.value) == (
        f"`model`: the folder {folder} has no config.json, so it is not a saved model; point it at a "
        "folder written by save_pretrained (e.g. a run's output_dir) or a Hub id."
    )


def test_missing_folder(tmp_path):
    with pytest.raises(UserError, match=r"^`model`: the folder .*/nope does not exist; check the path"):
        make(tmp_path, str(tmp_path / "nope"))


def test_offline_hub_id_not_in_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    with pytest.raises(UserError) as info:
        make(tmp_path, "someone/not-cached-model")
    assert str(info.value) == (
        "`model`: 'someone/not-cached-model' is neither a local folder nor in the Hugging Face cache, and "
        "HF_HUB_OFFLINE=1 forbids downloading it; download it first (`hf download someone/not-cached-model`) "
        "or give a local folder."
    )


def test_reference_folder_without_config_names_ref_model(tmp_path, tiny_model_dir):
    (tmp_path / "ref").mkdir()
    spec = get_method("npo")
    args = spec.make_config(output_dir=str(tmp_path / "run"), report_to="none", use_cpu=True)
    with pytest.raises(UserError, match=r"^`ref_model`: the folder .*/ref has no config.json"):
        spec.trainer_cls(
            str(tiny_model_dir),
            args,
            train_dataset=[{"question": "q", "answer": "a"}],
            ref_model=str(tmp_path / "ref"),
        )


def test_model_folder_without_tokenizer_names_processing_class(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    folder = tmp_path / "model_only"
    AutoModelForCausalLM.from_pretrained(tiny_model_dir).save_pretrained(folder)
    with pytest.raises(
        UserError, match=r"^`processing_class`: the folder .*/model_only has no tokenizer_config.json"
    ):
        make(tmp_path, str(folder))
