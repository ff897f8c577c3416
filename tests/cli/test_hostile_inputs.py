"""Issue #20's classes of bad input: each is ONE `error:` line naming the field/flag/file and the fix,
never a traceback and never a run that "succeeds" having done nothing (or something else)."""

from __future__ import annotations

import json
import shutil

import pytest
from test_user_errors import one_error_line


# ------------------------------------------------------------------ values no run can use (train)
@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--per_device_train_batch_size", "0"], "`per_device_train_batch_size` must be at least 1, got 0."),
        (["--gradient_accumulation_steps", "0"], "`gradient_accumulation_steps` must be at least 1, got 0."),
        (
            ["--max_steps", "-1", "--num_train_epochs", "0"],
            "`num_train_epochs` must be > 0 (got 0.0), or set",
        ),
        (
            ["--max_steps", "-1", "--num_train_epochs", "-1"],
            "`num_train_epochs` must be > 0 (got -1.0), or set",
        ),
        (["--num_train_epochs", "-1"], "`num_train_epochs` is -1.0; with `max_steps: 2` it is ignored"),
        (["--beta", "1e30"], "`beta` must be in (0, 1000], got 1e+30"),
        (["--method", "simnpo", "--gamma", "nan"], "`gamma` must be a finite number, got nan."),
        (["--fp16", "true"], "`fp16: true` needs a CUDA/XPU device"),
        (
            ["--model_name_or_path", "synthetic:tiny?vocab_size=-5"],
            "`vocab_size` must be at least 1, got -5.",
        ),
        (["--output_dir", ""], "`output_dir` is empty"),
        (
            ["--overwrite_output_dir", "true", "--resume_from_checkpoint", "true"],
            "`overwrite_output_dir: true` replaces the run in",
        ),
    ],
    ids=lambda v: "_".join(v).strip("-")[:40] if isinstance(v, list) else None,
)
def test_unusable_values_are_one_line(cli, recipe_file, flags, message):
    code, out = cli("train", recipe_file, *flags)
    assert code == 2, out
    line = one_error_line(out)
    assert line.startswith(f"error: {recipe_file}: "), line
    assert message in line, line


def test_a_null_number_names_its_field(cli, recipe_file):
    recipe_file.write_text(recipe_file.read_text().replace("learning_rate: 0.001", "learning_rate: null"))
    code, out = cli("train", recipe_file)
    assert code == 2
    assert "`learning_rate` must be set (got null); drop the key to use its default 1e-05." in one_error_line(
        out
    )


def test_output_dir_that_is_a_file_is_one_line(cli, recipe_file, tmp_path):
    (tmp_path / "afile").write_text("x")
    code, out = cli("train", recipe_file, "--output_dir", tmp_path / "afile")
    assert code == 2
    assert f"`output_dir` {tmp_path / 'afile'} is a file; give a folder" in one_error_line(out)


def test_num_processes_zero_is_one_line(cli, recipe_file):
    code, out = cli("train", recipe_file, "--accelerate_config", "multi_cpu", "--num_processes", "0")
    assert code == 2
    assert one_error_line(out) == "error: --num_processes must be at least 1, got 0."


# ------------------------------------------------------------------ model folders and the Hub
def test_model_folder_without_weights_is_one_line_in_train_and_eval(
    cli, recipe_file, tiny_model_dir, tmp_path
):
    folder = tmp_path / "no_weights"
    folder.mkdir()
    for f in tiny_model_dir.iterdir():
        if f.suffix == ".json":
            shutil.copy(f, folder)
    fix = f"the folder {folder} has a config but no weights"
    code, out = cli("train", recipe_file, "--model_name_or_path", folder)
    assert code == 2 and fix in one_error_line(out)
    for bench in ("tofu", "muse"):
        code, out = cli("eval", bench, "--model", folder, "--output-dir", tmp_path / "e")
        assert code == 2 and fix in one_error_line(out), out


def test_hub_id_without_network_is_one_fast_line(cli, recipe_file, monkeypatch):
    """No HF_HUB_OFFLINE and no network: a short connect probe answers, not huggingface_hub's 30-50 s
    of retries (the endpoint here is a closed local port, refused at once)."""
    from alignkit.models.source import hub_unreachable

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    hub_unreachable.cache_clear()
    try:
        code, out = cli("train", recipe_file, "--model_name_or_path", "someone/no-such-model")
        assert code == 2
        line = one_error_line(out)
        assert (
            "`model_name_or_path`: 'someone/no-such-model' is not a local path and the Hugging Face Hub "
            in line
        )
        assert "127.0.0.1:9 cannot be reached" in line and "set HF_HUB_OFFLINE=1" in line
        code, out = cli("train", recipe_file, "--train_dataset", "someone/no-such-data")
        assert code == 2
        assert "'someone/no-such-data' is not a local path and the Hugging Face Hub" in one_error_line(out)
    finally:
        hub_unreachable.cache_clear()


def test_a_hub_id_that_cannot_be_fetched_is_one_line(cli, recipe_file, monkeypatch):
    """The Hub answers but the repository cannot be fetched (no such id, gated, an error page): one line
    naming the key with transformers' reason (was transformers' OSError traceback)."""
    import http.server
    import threading

    from alignkit.models.source import hub_unreachable

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(404)
            self.end_headers()

        do_HEAD = do_GET

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    hub_unreachable.cache_clear()
    try:
        code, out = cli("train", recipe_file, "--model_name_or_path", "someone/no-such-model")
    finally:
        server.shutdown()
        hub_unreachable.cache_clear()
    assert code == 2
    assert "`model_name_or_path`: 'someone/no-such-model' could not be loaded: " in one_error_line(out)


# ------------------------------------------------------------------ resume
def _checkpointed_run(cli, recipe_file):
    code, out = cli("train", recipe_file, "--save_strategy", "steps", "--save_steps", "1")
    assert code == 0, out


@pytest.mark.parametrize(
    ("flags", "changed"),
    [
        (["--method", "ga"], "method 'npo' -> 'ga'"),
        (["--learning_rate", "5e-3"], "learning_rate 0.001 -> 0.005"),
    ],
)
def test_resume_with_other_method_or_optimizer_settings_is_refused_unless_asked(
    cli, recipe_file, tmp_path, flags, changed
):
    _checkpointed_run(cli, recipe_file)
    resume = [
        "--max_steps",
        "3",
        "--save_strategy",
        "steps",
        "--save_steps",
        "1",
        "--resume_from_checkpoint",
        "true",
    ]
    code, out = cli("train", recipe_file, *resume, *flags)
    assert code == 2
    line = one_error_line(out)
    assert f"resume would change {changed} of the run in {tmp_path / 'run'}" in line
    assert line.endswith("or pass --resume_with_changed_settings true to continue with the new ones.")
    code, out = cli("train", recipe_file, *resume, *flags, "--resume_with_changed_settings", "true")
    assert code == 0, out
    info = json.loads((tmp_path / "run" / "run_info.json").read_text())
    assert info["train"]["resumed_with_changed_settings"] is True and info["train"]["global_step"] == 3


# ------------------------------------------------------------------ eval flags and files
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--ref-model", "/no/such/ref", "--data", "PAIRS"],
            "error: `--ref-model`: the folder /no/such/ref does not exist",
        ),
        (["--batch-size", "0", "--data", "PAIRS"], "error: --batch-size must be at least 1, got 0."),
        (
            ["--task", "recommendation", "--num-prompts", "0"],
            "error: --num-prompts must be at least 1, got 0.",
        ),
        (
            ["--task", "safety", "--skip", "-5"],
            "error: --skip must be 0 or more (prompts skipped from the start), got -5.",
        ),
    ],
)
def test_eval_preference_flags_are_one_line(cli, tiny_model_dir, tmp_path, args, message):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    args = [str(pairs) if a == "PAIRS" else a for a in args]
    code, out = cli("eval", "preference", "--model", tiny_model_dir, *args, "--output-dir", tmp_path / "e")
    assert code == 2
    assert one_error_line(out).startswith(message)


def test_eval_preference_on_question_answer_rows_is_one_line(cli, tiny_model_dir, tmp_path):
    qa = tmp_path / "qa.jsonl"
    qa.write_text('{"question": "q", "answer": "a"}\n{"question": "q2", "answer": "b"}\n')
    code, out = cli(
        "eval", "preference", "--model", tiny_model_dir, "--data", qa, "--output-dir", tmp_path / "e"
    )
    assert code == 2
    assert one_error_line(out).startswith("error: the 2 eval rows hold no ordered pair of completions")


def test_eval_robustness_missing_target_model_is_one_line(cli, tiny_model_dir, tmp_path):
    code, out = cli(
        "eval", "robustness", "--model", tiny_model_dir, "--target-model", tmp_path / "nope",
        "--retain-model", tiny_model_dir, "--data", tmp_path, "--output-dir", tmp_path / "e",
    )  # fmt: skip
    assert code == 2
    assert one_error_line(out).startswith(
        f"error: `--target-model`: the folder {tmp_path / 'nope'} does not exist"
    )


def test_report_on_a_data_file_is_one_line(cli, tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"question": "q", "answer": "a"}\n{"question": "q2", "answer": "b"}\n')
    code, out = cli("report", rows, "--output", tmp_path / "rep")
    assert code == 2
    assert one_error_line(out).startswith(f"error: {rows} is not valid JSON (Extra data")


def test_robustness_without_torchao_is_one_line_naming_the_extra(cli, tiny_model_dir, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torchao", None)  # as on a default install: `import torchao` fails
    code, out = cli(
        "eval", "robustness", "--model", tiny_model_dir, "--target-model", tiny_model_dir,
        "--retain-model", tiny_model_dir, "--data", tmp_path, "--output-dir", tmp_path / "e",
    )  # fmt: skip
    assert code == 2
    assert "pip install 'alignkit[robustness]'" in one_error_line(out)


# ------------------------------------------------------------------ data that contradicts itself
def test_lipo_row_with_identical_completions_graded_differently_is_one_line(cli, recipe_file, tmp_path):
    rows = tmp_path / "lists.jsonl"
    rows.write_text(
        '{"prompt": "p", "completions": ["x", "y", "z"], "scores": [1.0, 0.0, 0.5]}\n'
        '{"prompt": "q", "completions": ["same", "other", "same"], "labels": [1.0, 0.5, 0.0]}\n'
    )
    code, out = cli("train", recipe_file, "--method", "lipo", "--train_dataset", rows)
    assert code == 2
    assert (
        "train_dataset, row 1, field `completions`: completions 0 and 2 are identical but graded 1 and 0"
        in (one_error_line(out))
    )


def _alternates_file(tmp_path, alternate) -> str:
    from alignkit.launch.sources import load_source

    rows = load_source("synthetic:tofu?num_people=20&split=forget10")
    path = tmp_path / "alternates.json"
    path.write_text(json.dumps([{**r, "alternate": alternate(i)} for i, r in enumerate(rows)]))
    return str(path)


def test_altpo_alternates_file_with_every_alternate_empty_is_one_line(cli, recipe_file, tmp_path):
    """Given by recipe key (it trained every forget question toward an empty answer, rc 0)."""
    path = _alternates_file(tmp_path, lambda i: " " if i % 2 else "")
    recipe_file.write_text(recipe_file.read_text() + f"alternates_file: {path}\n")
    code, out = cli("train", recipe_file, "--method", "altpo")
    assert code == 2
    assert f"alternates_file {path}: all 20 alternates of the forget set are empty" in one_error_line(out)


def test_altpo_empty_alternates_are_a_warning_line(cli, recipe_file, tmp_path):
    """Some empty alternates train (the spec reports them, filtering is opt-in) with a `warning:` line;
    alignkit's logged warnings used to print bare, like an info line."""
    path = _alternates_file(tmp_path, lambda i: "" if i == 0 else f"another answer {i}")
    code, out = cli("train", recipe_file, "--method", "altpo", "--alternates_file", path)
    assert code == 0, out
    warnings = [line for line in out.splitlines() if line.startswith("warning: AltPO: ")]
    assert len(warnings) == 1 and "20 prompts sampled; empty 1," in warnings[0], out


# ------------------------------------------------------------------ documented paths, as written
def test_the_resolved_recipe_header_command_reruns_the_run(cli, recipe_file, tmp_path):
    """Every resolved recipe's header says how to re-run it; that command, verbatim, works (it used to
    stop at the non-empty output_dir check)."""
    import shlex

    assert cli("train", recipe_file)[0] == 0
    header = (tmp_path / "run" / "alignkit_recipe.yaml").read_text().splitlines()
    command = next(line for line in header if "Re-run it with: " in line).split("Re-run it with: ")[1]
    argv = shlex.split(command)
    assert argv[:2] == ["alignkit", "train"]
    code, out = cli(*argv[1:])
    assert code == 0, out
    assert (tmp_path / "run-rerun" / "model.safetensors").read_bytes() == (
        tmp_path / "run" / "model.safetensors"
    ).read_bytes()  # the same configuration, the same weights


def test_ctrl_c_names_the_newest_checkpoint_and_the_resume_command(cli, recipe_file, tmp_path):
    """Ctrl-C (SIGINT) during training: one line saying where the newest complete checkpoint is and
    the command that resumes, exit 130, instead of a KeyboardInterrupt traceback."""
    import os
    import signal
    import threading
    import time

    marker = tmp_path / "run" / "checkpoint-2" / "alignkit_checkpoint.json"

    def interrupt_after_the_first_checkpoints():
        deadline = time.time() + 300
        while not marker.is_file() and time.time() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    # A process started in the background inherits SIGINT ignored; a terminal's Ctrl-C is not.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Thread(target=interrupt_after_the_first_checkpoints, daemon=True).start()
    flags = ("--max_steps", "100000", "--save_strategy", "steps", "--save_steps", "1")
    try:
        code, out = cli("train", recipe_file, *flags)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert code == 130
    line = one_error_line(out)
    # The newest folder with its completion marker: the interrupt may land while the next one is written.
    complete = [p.parent for p in (tmp_path / "run").glob("checkpoint-*/alignkit_checkpoint.json")]
    newest = sorted(complete, key=lambda p: int(p.name.split("-")[1]))[-1]
    assert line == (
        f"error: interrupted (Ctrl-C); the newest complete checkpoint is {newest}. Resume with: alignkit "
        f"train {recipe_file} {' '.join(flags)} --resume_from_checkpoint true"
    )


def test_robustness_reads_the_generated_sets_author_blocks(tmp_path):
    """On generated data (10 questions per person) the attack split used TOFU's 20-row author blocks:
    18 held-out rows where docs/results.md reports 16."""
    import argparse

    from alignkit.commands.robustness import rows_per_author
    from alignkit.data.synthetic.tofu import generate_tofu_benchmark
    from alignkit.eval.robustness import tofu_attack_split

    data = generate_tofu_benchmark(tmp_path / "tofu", num_people=20, questions_per_person=10)
    args = argparse.Namespace(rows_per_author=None, data=str(data))
    assert rows_per_author(args) == 10
    assert len(tofu_attack_split(20, k=2, rows_per_author=rows_per_author(args))[1]) == 16
    assert rows_per_author(argparse.Namespace(rows_per_author=None, data=str(tmp_path))) == 20  # real TOFU
    assert rows_per_author(argparse.Namespace(rows_per_author=5, data=str(data))) == 5


@pytest.mark.parametrize(
    "args",
    [["--per_device_train_batch_size", "0"], ["--model_name_or_path", "/no/such/model"]],
    ids=["recipe", "source"],
)
def test_a_mistake_is_printed_by_rank_0_only(cli, recipe_file, monkeypatch, args):
    """Under `accelerate launch` every rank parses the same recipe: the error is one line, not one per rank."""
    monkeypatch.setenv("RANK", "1")
    code, out = cli("train", recipe_file, *args)
    assert code == 2 and out == ""
    monkeypatch.setenv("RANK", "0")
    code, out = cli("train", recipe_file, *args)
    assert code == 2 and one_error_line(out)
