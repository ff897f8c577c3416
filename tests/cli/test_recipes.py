"""Every shipped recipe loads and validates; recipe parsing errors name the key and the fix.

The recipe list is found recursively (torchtune's check listed one folder and missed 194 of 197
files), and a method registered without any recipe fails here.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import re
from pathlib import Path

import pytest
import yaml

from alignkit.launch.recipe import RecipeArguments, RecipeError, load_recipe
from alignkit.launch.sources import SourceError, chunk_text_rows, load_source, parse_source

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "recipes"
ALL = sorted(RECIPES.rglob("*.yaml"))
IDS = [str(p.relative_to(RECIPES)) for p in ALL]
TINY = "synthetic:tiny?vocab_size=400"
FORGET = "synthetic:tofu?num_people=20&split=forget10"


def _generator():
    spec = importlib.util.spec_from_file_location("recipes_generate", RECIPES / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recipes_are_found_recursively():
    assert len(ALL) > 60, "recipes/ should hold the TOFU, MUSE-News, generated and template recipes"
    assert {p.relative_to(RECIPES).parts[0] for p in ALL} >= {
        "tofu",
        "muse_news",
        "generated_tofu",
        "templates",
    }


@pytest.mark.parametrize("path", ALL, ids=IDS)
def test_recipe_validates(path):
    recipe = load_recipe(path, set_env=False)
    assert recipe.method == yaml.safe_load(path.read_text())["method"]
    assert recipe.script.train_dataset and recipe.model.model_name_or_path


def _defaults(method: str) -> dict:
    from trl import ModelConfig

    from alignkit.trainers import get_method

    spec = get_method(method)
    out = {}
    for cls in (RecipeArguments, ModelConfig, spec.config_cls):
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                out[f.name] = f.default_factory()
    out.update(spec.overrides)
    return out


def _same(a, b) -> bool:
    a, b = getattr(a, "value", a), getattr(b, "value", b)
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b


@pytest.mark.parametrize("path", ALL, ids=IDS)
def test_recipe_sets_only_overrides_each_with_a_reason(path):
    """style.md: a header (what, launch line, expected result), then only commented overrides."""
    text = path.read_text()
    lines = text.splitlines()
    rel = path.relative_to(REPO).as_posix()
    header = []
    for line in lines:
        if not line.startswith("#"):
            break
        header.append(line)
    head = "\n".join(header)
    assert len(header) >= 3, f"{rel}: the header comment is missing"
    assert re.search(rf"(alignkit train|-m alignkit\.cli train) {re.escape(rel)}\b", head), (
        f"{rel}: the header must show how to run this file"
    )
    assert "Expected" in head, f"{rel}: the header must say what result to expect"
    for config in re.findall(r"--config_file (\S+)", head):
        assert (REPO / config).is_file(), f"{rel}: launch line names missing {config}"

    data = yaml.safe_load(text)
    defaults = _defaults(data["method"])
    for i, line in enumerate(lines):
        m = re.match(r"^([A-Za-z_]\w*):", line)
        if not m:
            continue
        key = m.group(1)
        commented = "  # " in line or (i > 0 and lines[i - 1].startswith("#") and lines[i - 1] not in header)
        assert commented, f"{rel}: `{key}` has no comment giving its reason or source"
        if key != "method" and key in defaults:
            assert not _same(data[key], defaults[key]), (
                f"{rel}: `{key}: {data[key]}` restates the default; the dataclass is the only home of defaults"
            )


TOFU_FORMAT = [p for p in ALL if p.relative_to(RECIPES).parts[0] in ("tofu", "generated_tofu")]


@pytest.mark.parametrize("path", TOFU_FORMAT, ids=[str(p.relative_to(RECIPES)) for p in TOFU_FORMAT])
def test_tofu_format_recipes_train_with_the_boundary_their_evaluation_scores(path):
    """`alignkit eval tofu` scores under open-unlearning's protocol by default; a recipe evaluated there
    tokenises prompt + answer the same way when it trains, and its header says so."""
    from alignkit.eval.protocols import get_protocol
    from alignkit.eval.tofu import evaluate_tofu

    default = inspect.signature(evaluate_tofu).parameters["protocol"].default
    recipe = load_recipe(path, set_env=False)
    assert recipe.training.boundary == get_protocol(default).boundary, path
    assert "Tokenisation: joint" in path.read_text().split("\n\n")[0], f"{path}: the header must say why"


def test_generated_recipes_are_up_to_date():
    gen = _generator()
    files = gen.render_all()
    stale = [p for p, text in files.items() if (RECIPES / p).read_text() != text]
    assert not stale, f"run `python recipes/generate.py`; stale: {stale[:5]}"
    generated = {str(p.relative_to(RECIPES)) for p in gen.generated_paths()}
    assert generated == set(files), f"generated files no longer produced: {sorted(generated - set(files))}"


def test_every_registered_method_has_recipes():
    from alignkit.trainers import METHODS

    used = {yaml.safe_load(p.read_text())["method"] for p in ALL}
    missing = sorted(set(METHODS) - used)
    assert not missing, f"methods without recipes (add them to recipes/generate.py): {missing}"


def test_tofu_covers_every_unlearning_method_split_and_variant():
    from alignkit.trainers import METHODS, UnlearnConfig

    for name, spec in METHODS.items():
        if not issubclass(spec.config_cls, UnlearnConfig) or spec.data != "single":
            continue  # TOFU has question/answer rows only (WPN's 1-vs-N rows have a synthetic recipe)
        for split in ("forget01", "forget05", "forget10"):
            for variant in ("lora", "full"):
                assert (RECIPES / "tofu" / name / f"{split}_{variant}.yaml").is_file(), (name, split, variant)


ACCELERATE = sorted((REPO / "accelerate_configs").glob("*.yaml"))


def test_accelerate_configs_ship_every_launch_mode():
    names = {p.stem for p in ACCELERATE}
    assert names >= {"single_gpu", "multi_gpu", "zero2", "zero3", "zero3_offload", "fsdp2", "multi_cpu"}
    assert names >= {"multi_node_ddp", "multi_node_zero3"}  # several machines (README, "Several machines")


@pytest.mark.parametrize("path", ACCELERATE, ids=[p.stem for p in ACCELERATE])
def test_accelerate_config_loads(path):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))
    assert config.distributed_type is not None
    head = path.read_text().split("\n\n")[0]
    assert "Reference modes" in head and "accelerate launch" in head, (
        f"{path.name}: explain use and ref modes"
    )


# ------------------------------------------------------------------------------ parsing and errors


def test_cli_overrides_beat_the_recipe(recipe_file):
    r = load_recipe(recipe_file, ["--learning_rate", "0.5", "--beta", "0.2"])
    assert r.training.learning_rate == 0.5 and r.training.beta == 0.2
    assert r.origin["learning_rate"] == "cli" and r.origin["max_steps"] == "recipe"
    assert r.settings["beta"] == 0.2


def test_variant_overrides_sit_under_the_recipe(make_recipe, tmp_path):
    base = dict(model_name_or_path=TINY, train_dataset=FORGET)
    assert (
        load_recipe(make_recipe(tmp_path / "a.yaml", method="npo_rt", **base)).training.retain_loss == "nll"
    )
    r = load_recipe(make_recipe(tmp_path / "b.yaml", method="npo_rt", retain_loss="kl", **base))
    assert r.training.retain_loss == "kl"


def test_method_from_the_command_line_picks_the_config(recipe_file):
    r = load_recipe(recipe_file, ["--method", "simnpo"])
    assert type(r.training).__name__ == "SimNPOConfig" and r.training.beta == 4.5


def test_misspelled_key_in_recipe_suggests_the_closest(make_recipe, tmp_path):
    path = make_recipe(
        tmp_path / "r.yaml", method="npo", model_name_or_path=TINY, train_dataset=FORGET, lerning_rate=1
    )
    with pytest.raises(
        RecipeError, match=r"r\.yaml: unknown key `lerning_rate`\. Did you mean `learning_rate`\?"
    ):
        load_recipe(path)


def test_misspelled_key_on_the_command_line_suggests_the_closest(recipe_file):
    with pytest.raises(RecipeError, match=r"command line: unknown key `bta`\. Did you mean `beta`\?"):
        load_recipe(recipe_file, ["--bta", "0.2"])


def test_abbreviations_are_not_accepted(recipe_file):
    with pytest.raises(RecipeError, match="unknown key `learning_rat`"):
        load_recipe(recipe_file, ["--learning_rat", "0.2"])


def test_key_of_another_method_says_which(make_recipe, tmp_path):
    path = make_recipe(
        tmp_path / "r.yaml", method="ga", model_name_or_path=TINY, train_dataset=FORGET, beta=0.1
    )
    with pytest.raises(
        RecipeError, match=r"unknown key `beta`\. It is a field of .*npo.*, not of method 'ga'"
    ):
        load_recipe(path)


def test_every_bad_key_is_reported_at_once(make_recipe, tmp_path):
    path = make_recipe(
        tmp_path / "r.yaml", method="npo", model_name_or_path=TINY, train_dataset=FORGET, a_b=1
    )
    with pytest.raises(RecipeError) as err:
        load_recipe(path, ["--c_d", "2"])
    assert "`a_b`" in str(err.value) and "`c_d`" in str(err.value)


def test_unknown_method_suggests_the_closest(make_recipe, tmp_path):
    path = make_recipe(tmp_path / "r.yaml", method="nop", model_name_or_path=TINY, train_dataset=FORGET)
    with pytest.raises(RecipeError, match="Unknown method 'nop'. Did you mean 'npo'"):
        load_recipe(path)


def test_missing_method_and_dataset_are_named(make_recipe, tmp_path):
    with pytest.raises(RecipeError, match="no `method:` given"):
        load_recipe(make_recipe(tmp_path / "a.yaml", model_name_or_path=TINY))
    with pytest.raises(RecipeError, match="`train_dataset` is required"):
        load_recipe(make_recipe(tmp_path / "b.yaml", method="npo", model_name_or_path=TINY))


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"num_train_epochs": [1, 2]}, r"`num_train_epochs` must be a single float"),
        ({"max_steps": 2.5}, r"`max_steps` must be an integer"),
        ({"learning_rate": "fast"}, r"learning_rate.*invalid float value: 'fast'"),
        ({"beta": -1.0}, r"`beta` must be > 0, got -1.0"),
        ({"ref_mode": "sometimes"}, r"`ref_mode` must be one of"),
        (
            {"use_peft": True, "lora_target_modules": ["q_proj", "lm_head"]},
            r"`lm_head` cannot carry a LoRA adapter",
        ),
        ({"load_in_4bit": True}, r"set `use_peft: true` \(QLoRA\)"),
        ({"ref_mode": "adapter_off"}, r"`ref_mode: adapter_off` needs `use_peft: true`"),
        (
            {"train_dataset": "synthetic:tofo"},
            r"Unknown synthetic data source 'tofo'.*Did you mean 'synthetic:tofu'",
        ),
        (
            {"model_name_or_path": "synthetic:tiny?hiden_size=8"},
            r"unknown parameter `hiden_size`.*Did you mean `hidden_size`",
        ),
    ],
)
def test_bad_values_are_errors_that_name_the_key(make_recipe, tmp_path, values, match):
    base = dict(method="npo", model_name_or_path=TINY, train_dataset=FORGET)
    with pytest.raises(RecipeError, match=match):
        load_recipe(make_recipe(tmp_path / "r.yaml", **{**base, **values}))


def test_config_flag_is_refused(recipe_file):
    with pytest.raises(RecipeError, match="`--config` is not used"):
        load_recipe(recipe_file, ["--config", "x.yaml"])


def test_env_mapping_is_exported(make_recipe, tmp_path, monkeypatch):
    monkeypatch.delenv("ALIGNKIT_TEST_VAR", raising=False)
    path = make_recipe(
        tmp_path / "r.yaml",
        method="npo",
        model_name_or_path=TINY,
        train_dataset=FORGET,
        env={"ALIGNKIT_TEST_VAR": 7},
    )
    r = load_recipe(path)
    import os

    assert os.environ["ALIGNKIT_TEST_VAR"] == "7" and r.settings["env"] == {"ALIGNKIT_TEST_VAR": "7"}


def test_machine_defaults_are_noted(make_recipe, tmp_path):
    import torch

    r = load_recipe(
        make_recipe(tmp_path / "plain.yaml", method="npo", model_name_or_path=TINY, train_dataset=FORGET)
    )
    assert r.training.output_dir == str(Path("runs") / "plain")
    if not torch.cuda.is_available():
        assert r.training.use_cpu and any("use_cpu" in n for n in r.notes)


def test_resolved_recipe_round_trips(recipe_file, tmp_path):
    r = load_recipe(recipe_file, ["--beta", "0.3"])
    again = tmp_path / "again.yaml"
    again.write_text(r.to_yaml("resolved"))
    r2 = load_recipe(again)
    assert r2.settings == r.settings and r2.training.beta == 0.3


# ------------------------------------------------------------------------------------------ sources


def test_source_kinds():
    assert parse_source("locuslab/TOFU").kind == "hub"
    assert parse_source(str(REPO)).kind == "local"
    s = parse_source("synthetic:tofu?num_people=12&seed=3&split=forget05")
    assert (s.kind, s.name, s.params) == (
        "synthetic",
        "tofu",
        {"num_people": 12, "seed": 3, "split": "forget05"},
    )
    with pytest.raises(SourceError, match="`num_people=many` is not a valid int"):
        parse_source("synthetic:tofu?num_people=many")


def test_synthetic_tofu_loads_by_split_or_config():
    by_split = load_source("synthetic:tofu?num_people=20&split=forget10")
    by_config = load_source("synthetic:tofu?num_people=20", "forget10")
    assert len(by_split) == len(by_config) == 20 and by_split[0] == by_config[0]
    assert set(by_split.column_names) == {"question", "answer"}
    with pytest.raises(SourceError, match="has no split 'forget11'. Did you mean 'forget10'"):
        load_source("synthetic:tofu?num_people=20&split=forget11")
    with pytest.raises(SourceError, match="names split='forget10' but the dataset config is 'forget05'"):
        load_source("synthetic:tofu?num_people=20&split=forget10", "forget05")


def test_synthetic_preference_tasks_load():
    rows = load_source("synthetic:recommendation?num_users=8&view=pairwise")
    assert {"prompt", "chosen", "rejected"} <= set(rows.column_names) and len(rows) == 8 * 4


def test_missing_local_data_is_named(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        load_source(str(tmp_path / "nope.json"))


def test_hub_data_offline_says_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        SourceError,
        match=r"HF_HUB_OFFLINE=1 and it is not in the local cache\. Point the recipe at a local copy",
    ):
        load_source("alignkit-test-nonexistent/dataset", "x")


def test_text_rows_are_chunked_by_tokens(tokenizer):
    import datasets

    text = " ".join(["The capital of France is Paris."] * 40)
    rows = datasets.Dataset.from_dict({"text": [text]})
    chunks = chunk_text_rows(rows, tokenizer, 32)
    n_tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    assert len(chunks) == -(-n_tokens // 32)
    assert all(len(tokenizer(c, add_special_tokens=False)["input_ids"]) <= 34 for c in chunks["text"])
