"""Tokens never reach a file alignkit writes or uploads, nor its output."""

from __future__ import annotations

from pathlib import Path

import yaml

HUB_TOKEN = "hf_FAKEcliTOKEN0123456789abcdefghij"
ENV_TOKEN = "hf_FAKEenvTOKEN0123456789abcdefghij"
PLAIN_SECRET = "not-token-shaped-but-secret"  # found by its key name only
NAME_TOKEN = "hf_FAKEnameTOKEN0123456789abcdefghi"  # pasted into a free-text field (run_name)
SECRETS = (HUB_TOKEN, ENV_TOKEN, PLAIN_SECRET, NAME_TOKEN)


def files_holding(root: Path) -> list[str]:
    hits = []
    for path in sorted(root.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            hits += [f"{path.relative_to(root)}: {s}" for s in SECRETS if s.encode() in data]
    return hits


def test_tokens_reach_no_written_or_uploaded_file(cli, recipe_file, tmp_path, monkeypatch):
    for var in ("HF_TOKEN", "WANDB_API_KEY"):
        monkeypatch.setenv(var, "placeholder")  # restored after the test (the recipe exports its env)
    recipe = yaml.safe_load(recipe_file.read_text())
    recipe["env"] = {"HF_TOKEN": ENV_TOKEN, "WANDB_API_KEY": PLAIN_SECRET, "TOKENIZERS_PARALLELISM": "false"}
    recipe["save_strategy"] = "steps"
    recipe["save_steps"] = 1  # checkpoints (training_args.bin, trainer_state.json) are written too
    recipe_file.write_text(yaml.safe_dump(recipe))

    code, out = cli("train", recipe_file, "--hub_token", HUB_TOKEN, "--run_name", f"npo-{NAME_TOKEN}")
    assert code == 0, out
    run = tmp_path / "run"
    assert (run / "checkpoint-1" / "training_args.bin").is_file()
    code, push_out = cli("push", run, "--repo-id", "someone/model", "--dry-run", tmp_path / "upload")
    assert code == 0, push_out

    assert files_holding(run) == []
    assert files_holding(tmp_path / "upload") == []
    assert not [s for s in SECRETS if s in out + push_out]
    resolved = yaml.safe_load((run / "alignkit_recipe.yaml").read_text())
    assert resolved["hub_token"] == "<redacted>" and resolved["env"]["HF_TOKEN"] == "<redacted>"
    assert resolved["env"]["WANDB_API_KEY"] == "<redacted>"
    assert resolved["env"]["TOKENIZERS_PARALLELISM"] == "false"  # ordinary settings stay


def test_push_redacts_a_run_written_with_a_plain_token(cli, recipe_file, tmp_path):
    """A run folder from before redaction (token in its recipe) is cleaned when staged for upload."""
    code, out = cli("train", recipe_file)
    assert code == 0, out
    run = tmp_path / "run"
    recipe = run / "alignkit_recipe.yaml"
    recipe.write_text(recipe.read_text() + f"hub_token: {HUB_TOKEN}\nenv:\n  HF_TOKEN: {ENV_TOKEN}\n")
    code, out = cli("push", run, "--repo-id", "someone/model", "--dry-run", tmp_path / "upload")
    assert code == 0, out
    assert files_holding(tmp_path / "upload") == []
    assert "hub_token: <redacted>" in (tmp_path / "upload" / "alignkit_recipe.yaml").read_text()


def test_run_info_is_strict_json_without_bare_nan(tmp_path):
    import json
    import math

    from alignkit.launch.runner import write_json

    path = tmp_path / "run_info.json"
    write_json(path, {"train": {"train_loss": math.nan, "loss_curve": [[1, 2.0], [2, math.inf]]}, "n": 3})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    strict = json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    assert strict == {"train": {"train_loss": None, "loss_curve": [[1, 2.0], [2, None]]}, "n": 3}
