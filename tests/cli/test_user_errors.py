"""A user's mistake is ONE line on stderr (`error: ...`, exit 2) naming the file/row/field/flag and the fix."""

from __future__ import annotations

import pytest

FIX = "a dataset file holds one JSON object per line (JSONL) or a JSON list of objects"


def one_error_line(out: str) -> str:
    lines = [line for line in out.splitlines() if line.strip()]
    assert "Traceback" not in out
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, out
    return errors[0]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", f"is empty (0 bytes); {FIX}."),
        (b" \n \n", f"holds only whitespace, no rows; {FIX}."),
        (b'{"question": "q", "answer": "a"}\n{"question": "q",\n', "line 2: not valid JSON"),
        (b'{"question": "q\xff", "answer": "a"}\n', "line 1: byte 0xff at column 16 is not valid UTF-8"),
        (b'"just a string"\n', "line 1: is a JSON str, not an object of fields"),
    ],
)
def test_train_on_a_bad_data_file_is_one_line(cli, recipe_file, tmp_path, content, problem):
    data = tmp_path / "rows.jsonl"
    data.write_bytes(content)
    code, out = cli("train", recipe_file, "--train_dataset", data)
    assert code == 2
    line = one_error_line(out)
    assert line.startswith(f"error: {recipe_file}: {data}")
    assert problem in line


def test_train_on_an_ambiguous_row_names_row_and_fields(cli, recipe_file, tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_text(
        '{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": "p", "choosen": "a", "rejected": "b"}\n'
    )
    code, out = cli("train", recipe_file, "--train_dataset", data)
    assert code == 2
    assert one_error_line(out) == (
        f"error: {recipe_file}: train_dataset, row 1, field `choosen`: is not a known field; "
        "did you mean `chosen`? Rename it"
    )


def test_the_cli_handler_turns_user_errors_into_one_line(capsys):
    """Any command raising a UserError (here a record error) gets the same one-line treatment."""
    from alignkit.cli import report_error
    from alignkit.data import RecordError

    code = report_error(RecordError("train.jsonl", 4, "chosen", "is empty"))
    assert code == 2
    assert capsys.readouterr().err == "error: train.jsonl, row 4, field `chosen`: is empty\n"


def test_resume_without_a_checkpoint_is_one_line(cli, recipe_file, tmp_path):
    code, out = cli("train", recipe_file, "--resume_from_checkpoint", "true")
    assert code == 2
    assert one_error_line(out) == (
        f"error: `resume_from_checkpoint: true`: {tmp_path / 'run'} holds no complete checkpoint-* folder to "
        "resume from (save_strategy 'no' saves none); give a checkpoint folder, or drop the flag to start over."
    )


def test_rerunning_into_a_used_output_dir_is_refused_unless_asked(cli, recipe_file, tmp_path):
    assert cli("train", recipe_file)[0] == 0
    first = (tmp_path / "run" / "model.safetensors").read_bytes()
    code, out = cli("train", recipe_file, "--learning_rate", "1e-2")
    assert code == 2
    line = one_error_line(out)
    assert line.startswith(f"error: output_dir {tmp_path / 'run'} already holds files (")
    assert line.endswith(
        "pass --overwrite_output_dir true to replace that run, --resume_from_checkpoint true to continue "
        "it, or another --output_dir."
    )
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == first  # untouched
    code, out = cli("train", recipe_file, "--learning_rate", "1e-2", "--overwrite_output_dir", "true")
    assert code == 0, out
    assert (tmp_path / "run" / "model.safetensors").read_bytes() != first


def test_model_folder_without_config_is_one_line(cli, recipe_file, tmp_path):
    folder = tmp_path / "just_weights"
    folder.mkdir()
    (folder / "tokenizer.json").write_text("{}")
    code, out = cli("train", recipe_file, "--model_name_or_path", folder)
    assert code == 2
    assert one_error_line(out) == (
        f"error: {recipe_file}: `model_name_or_path`: the folder {folder} has no config.json, so it is not "
        "a saved model; point it at a folder written by save_pretrained (e.g. a run's output_dir) or a Hub id."
    )


def test_offline_hub_model_is_one_line(cli, recipe_file, tmp_path, monkeypatch):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    code, out = cli("train", recipe_file, "--model_name_or_path", "meta-llama/Not-Cached-1B")
    assert code == 2
    assert one_error_line(out) == (
        f"error: {recipe_file}: `model_name_or_path`: 'meta-llama/Not-Cached-1B' is neither a local folder "
        "nor in the Hugging Face cache, and HF_HUB_OFFLINE=1 forbids downloading it; download it first "
        "(`hf download meta-llama/Not-Cached-1B`) or give a local folder."
    )


def test_skipped_rows_are_counted_in_plan_run_info_and_card(cli, recipe_file, tmp_path):
    import json

    rows = [{"question": f"Who is person {i}?", "answer": f"Person {i} is a writer."} for i in range(10)]
    rows[3]["answer"] = ""
    rows[7] = {"question": "Where?", "answer": "Here.", "choosen": "x"}
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out = cli("train", recipe_file, "--train_dataset", data, "--on_invalid", "skip")
    assert code == 0, out
    assert "(8 rows, 2 invalid skipped)" in out.replace("\n", " ")
    info = json.loads((tmp_path / "run" / "run_info.json").read_text())
    assert info["datasets"]["train"]["rows"] == 8 and info["datasets"]["train"]["rows_skipped"] == 2
    assert info["derived"]["train_rows"] == 8
    code, out = cli("push", tmp_path / "run", "--repo-id", "someone/m", "--dry-run", tmp_path / "up")
    assert code == 0, out
    assert f"| `{data}` | – | 8 (2 invalid skipped) |" in (tmp_path / "up" / "README.md").read_text()
