"""Recipe values from YAML get the command line's validation; a bad recipe is one line naming the key."""

from __future__ import annotations

import pytest
import yaml


def one_line(out: str) -> str:
    lines = [line for line in out.splitlines() if line.strip()]
    assert "Traceback" not in out and len(lines) == 1, out
    return lines[0]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"dtype": "float13"},
            "`dtype`: invalid choice: 'float13' (choose from 'auto', 'bfloat16', 'float16', 'float32') (got 'float13')",
        ),
        (
            {"use_peft": 5},
            "`use_peft`: Truthy value expected: got 5 but expected one of yes/no, true/false, t/f, y/n, 1/0 "
            "(case insensitive). (got 5)",
        ),
        ({"learning_rate": -1}, "`learning_rate` must be >= 0, got -1.0."),
        ({"output_dir": ["a", "b"]}, "`output_dir` takes a single value, got a list ['a', 'b']; keep one."),
        ({"max_steps": "many"}, "`max_steps`: invalid int value: 'many' (got 'many')"),
    ],
)
def test_bad_yaml_values_are_one_line_naming_the_key(cli, recipe_file, values, message):
    recipe = {**yaml.safe_load(recipe_file.read_text()), **values}
    recipe_file.write_text(yaml.safe_dump(recipe))
    code, out = cli("train", recipe_file)
    assert code == 2
    assert one_line(out) == f"error: {recipe_file}: {message}"


def test_the_same_values_on_the_command_line_are_refused_too(cli, recipe_file):
    code, out = cli("train", recipe_file, "--dtype", "float13")
    assert code == 2 and "float13" in one_line(out)
    code, out = cli("train", recipe_file, "--learning_rate", "-1")
    assert code == 2 and one_line(out) == f"error: {recipe_file}: `learning_rate` must be >= 0, got -1.0."


def test_duplicate_yaml_keys_are_an_error(cli, tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("method: npo\nlearning_rate: 1.0e-3\nbeta: 0.1\nlearning_rate: 5.0e-3\n")
    code, out = cli("train", path)
    assert code == 2
    assert one_line(out) == (
        f"error: {path}, line 4: key `learning_rate` appears twice (lines 2 and 4); keep one."
    )


def test_non_utf8_recipe_is_an_error(cli, tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("method: npo\n# café\nbeta: 0.1\n".encode("latin-1"))
    code, out = cli("train", path)
    assert code == 2
    assert (
        one_line(out) == f"error: {path}, line 2: byte 0xe9 is not valid UTF-8; re-save the recipe as UTF-8."
    )


def test_good_yaml_values_still_parse(recipe_file):
    from alignkit.launch.recipe import load_recipe

    recipe = {
        **yaml.safe_load(recipe_file.read_text()),
        "learning_rate": "1e-4",  # YAML reads this as a string; argparse makes it a float
        "use_peft": True,
        "lora_target_modules": ["q_proj", "v_proj"],
        "report_to": ["none"],
        "max_steps": 3.0,
    }
    recipe_file.write_text(yaml.safe_dump(recipe))
    loaded = load_recipe(recipe_file)
    assert loaded.training.learning_rate == 1e-4 and loaded.model.use_peft is True
    assert loaded.model.lora_target_modules == ["q_proj", "v_proj"] and loaded.training.max_steps == 3
