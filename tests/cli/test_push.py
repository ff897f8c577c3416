"""``alignkit push``: the dry-run folder is exactly a loadable upload with a parsable card and metrics.

The real upload path runs up to the network boundary (``create_repo`` under ``HF_HUB_OFFLINE=1``)
without mocking any of alignkit; the Hub itself is never reached.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

TINY = "synthetic:tiny?vocab_size=400"
FORGET = "synthetic:tofu?num_people=20&split=forget10"
FAKE_TOKEN = "hf_alignkitFakeTokenDoNotPrint0123456789"
TOFU_SUMMARY = {
    "forget_quality": 0.0123,
    "model_utility": 0.55,
    "forget_truth_ratio": 0.61,
    "forget_Q_A_ROUGE": 0.4,
}


def _train(tmp_path_factory, name: str, *extra: str) -> Path:
    from alignkit.cli import main

    out = tmp_path_factory.mktemp(name) / "run"
    recipe = out.parent / "r.yaml"
    recipe.write_text(
        f"method: npo\nmodel_name_or_path: '{TINY}'\ntrain_dataset: '{FORGET}'\noutput_dir: {out}\n"
        "max_steps: 1\nper_device_train_batch_size: 4\nlogging_steps: 1\nsave_strategy: 'no'\ndisable_tqdm: true\n"
    )
    assert main(["train", str(recipe), *extra]) == 0
    return out


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, cache_dir):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ALIGNKIT_CACHE", str(cache_dir))
        run = _train(tmp_path_factory, "full")
    # What `alignkit eval tofu --output-dir RUN/eval/tofu` and `alignkit report` leave in the run folder.
    eval_dir = run / "eval" / "tofu"
    eval_dir.mkdir(parents=True)
    (eval_dir / "TOFU_SUMMARY.json").write_text(json.dumps(TOFU_SUMMARY))
    logs = {k: {"agg_value": v, "value_by_index": {}} for k, v in TOFU_SUMMARY.items()}
    logs["alignkit"] = {"benchmark": "tofu", "forget_split": "forget10", "data": "locuslab/TOFU"}
    (eval_dir / "TOFU_EVAL.json").write_text(json.dumps(logs))
    (eval_dir / "fq_vs_mu.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    return run


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, cache_dir):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ALIGNKIT_CACHE", str(cache_dir))
        return _train(
            tmp_path_factory, "lora", "--use_peft", "true", "--lora_target_modules", "q_proj", "v_proj"
        )


def _card(folder: Path) -> ModelCard:
    return ModelCard.load(folder / "README.md")


def test_full_dry_run_loads_back_with_its_card_and_metrics(full_run, cli, tmp_path):
    out = tmp_path / "upload"
    code, text = cli("push", full_run, "--repo-id", "me/tiny-npo", "--dry-run", out)
    assert code == 0, text
    files = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert {
        "README.md",
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "alignkit_recipe.yaml",
        "run_info.json",
    } <= files
    assert {"eval/tofu/TOFU_SUMMARY.json", "eval/tofu/fq_vs_mu.png"} <= files
    assert not any(f.endswith(".bin") for f in files), "pickles (training_args.bin) are never uploaded"

    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(out)
    AutoTokenizer.from_pretrained(out)

    card = _card(out)
    assert card.data.library_name == "transformers" and "npo" in card.data.tags
    metrics = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert metrics == TOFU_SUMMARY
    result = card.data.eval_results[0]
    assert (result.dataset_type, result.dataset_config) == ("locuslab/TOFU", "forget10")
    assert "locuslab/TOFU" in card.data.datasets
    assert "2404.05868" in card.text and "![eval/tofu/fq_vs_mu.png](eval/tofu/fq_vs_mu.png)" in card.text
    assert "| Forget Quality | 0.0123 |" in card.text and "| `beta` | 0.1 |" in card.text


def test_lora_dry_run_loads_as_an_adapter(lora_run, cli, tmp_path):
    out = tmp_path / "upload"
    code, text = cli("push", lora_run, "--repo-id", "me/tiny-npo-lora", "--dry-run", out)
    assert code == 0, text
    assert (out / "adapter_model.safetensors").is_file() and not (out / "model.safetensors").exists()
    from peft import AutoPeftModelForCausalLM

    model = AutoPeftModelForCausalLM.from_pretrained(out)
    assert model.peft_config["default"].r == 16
    card = _card(out)
    assert card.data.library_name == "peft" and "lora" in card.data.tags
    assert "AutoPeftModelForCausalLM" in card.text and not card.data.eval_results


def test_merged_dry_run_is_a_plain_model_equal_to_the_adapter(lora_run, cli, tmp_path):
    import torch
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM

    out = tmp_path / "merged"
    code, text = cli("push", lora_run, "--repo-id", "me/tiny-npo-merged", "--merge", "--dry-run", out)
    assert code == 0, text
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    adapter = AutoPeftModelForCausalLM.from_pretrained(lora_run).eval()
    ids = torch.tensor([[1, 5, 9, 12, 3]])
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, adapter(ids).logits, rtol=1e-4, atol=1e-5)
    assert "LoRA-merged" in _card(out).text and _card(out).data.library_name == "transformers"


def test_results_file_replaces_found_logs(full_run, cli, tmp_path):
    results = tmp_path / "scores.json"
    results.write_text(json.dumps({"my_metric": 0.25, "note": "not a number"}))
    out = tmp_path / "upload"
    assert cli("push", full_run, "--repo-id", "me/x", "--results", results, "--dry-run", out)[0] == 0
    card = _card(out)
    assert {(r.metric_type, r.metric_value) for r in card.data.eval_results} == {("my_metric", 0.25)}
    assert (out / "eval" / "scores.json").is_file()


def test_trainer_card_is_the_push_card(full_run, tmp_path):
    """Trainer.push_to_hub writes its card through create_model_card: the same text as push's."""
    from alignkit import hub
    from alignkit.launch.recipe import load_recipe
    from alignkit.launch.runner import build

    recipe = load_recipe(full_run / "alignkit_recipe.yaml", ["--output_dir", str(full_run)])
    trainer = build(recipe).trainer
    trainer.create_model_card()
    written = (full_run / "README.md").read_text()
    expected, _, _ = hub.card_for_run(full_run)
    assert written == expected.content
    assert {r.metric_type for r in ModelCard.load(full_run / "README.md").data.eval_results} == set(
        TOFU_SUMMARY
    )


def test_card_without_run_info_comes_from_the_trainer(tmp_path, tiny_model_dir):
    from alignkit import NPOConfig, NPOTrainer

    args = NPOConfig(output_dir=str(tmp_path / "t"), max_steps=1, use_cpu=True, report_to="none")
    trainer = NPOTrainer(
        str(tiny_model_dir), args=args, train_dataset=[{"question": "Who?", "answer": "Me."}] * 4
    )
    trainer.create_model_card(dataset_name="my/data")
    card = ModelCard.load(tmp_path / "t" / "README.md")
    assert "npo" in card.data.tags and "my/data" in card.data.datasets and "NPOTrainer" in card.text


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--merge"], "holds a full model"),
        (["--repo-id", "not-a-repo-id"], "must look like USER/NAME"),
    ],
)
def test_push_errors(full_run, cli, tmp_path, args, match):
    base = ["push", full_run, "--repo-id", "me/x", "--dry-run", tmp_path / "u"]
    if "--repo-id" in args:
        base = ["push", full_run, *args, "--dry-run", tmp_path / "u"]
    else:
        base += args
    code, text = cli(*base)
    assert code == 2 and match in text


def test_dry_run_folder_must_be_new(full_run, cli, tmp_path):
    (tmp_path / "u").mkdir()
    (tmp_path / "u" / "old.txt").write_text("x")
    code, text = cli("push", full_run, "--repo-id", "me/x", "--dry-run", tmp_path / "u")
    assert code == 2 and "not empty" in text


def test_no_token_is_ever_printed_or_staged(full_run, cli, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    code, text = cli("push", full_run, "--repo-id", "me/x", "--dry-run", tmp_path / "u")
    assert code == 0 and FAKE_TOKEN not in text
    for f in (tmp_path / "u").rglob("*"):
        if f.is_file():
            assert FAKE_TOKEN.encode() not in f.read_bytes(), f


def test_real_upload_stops_at_the_network_boundary_without_leaking_the_token(full_run, cli, monkeypatch):
    """No mock: push_run stages the folder and calls create_repo, which offline mode refuses."""
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, text = cli("push", full_run, "--repo-id", "me/x", "--private")
    assert code == 1 and "upload failed" in text and "Offline" in text
    assert FAKE_TOKEN not in text


def test_scrub_removes_token_values(monkeypatch):
    from alignkit.hub import scrub

    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    assert scrub(f"401 for Bearer {FAKE_TOKEN}") == "401 for Bearer ***"
    assert "hf_***" in scrub("token hf_abcdefghijklmnopqrstuvwxyz0123")


def test_muse_results_reach_the_card_under_readable_names(tmp_path):
    """Every metric `alignkit eval muse` writes has a readable name in the card's model-index."""
    from alignkit.eval.logs import find_eval_results
    from alignkit.eval.muse import METRIC_ORDER
    from alignkit.hub import eval_results_metadata

    folder = tmp_path / "eval" / "muse"
    folder.mkdir(parents=True)
    values = {name: 0.25 + i / 100 for i, name in enumerate(METRIC_ORDER)}
    (folder / "MUSE_SUMMARY.json").write_text(json.dumps(values))
    entries = eval_results_metadata(find_eval_results(tmp_path), info={})
    names = {e.metric_type: e.metric_name for e in entries}
    assert set(names) == set(METRIC_ORDER)
    raw = [key for key, readable in names.items() if readable == key]
    assert not raw, f"MUSE metrics without a readable card name: {raw}"
    assert names["privleak"] == "PrivLeak (%)" and names["forget_verbmem_ROUGE"].startswith("VerbMem")
    assert {e.metric_value for e in entries} == set(values.values())


@pytest.mark.parametrize(
    "method,family_tag,absent",
    [("npo", "unlearning", "alignment"), ("softmax_dpo", "alignment", "unlearning"), ("s_dpo", "alignment", "unlearning"),
     ("dpo", "alignment", "unlearning"), ("lipo", "alignment", "unlearning"), ("finetune", None, "unlearning")],
)  # fmt: skip
def test_card_tags_come_from_the_registry(method, family_tag, absent):
    from alignkit.hub import build_model_card
    from alignkit.trainers import get_method

    tags = build_model_card({"method": method, "model_kind": "full"}).data.tags
    assert method in tags and absent not in tags
    assert family_tag is None or family_tag in tags
    assert set(get_method(method).card_tags) <= set(tags)
