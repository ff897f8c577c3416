"""`alignkit --help` and argument errors are instant: they import none of the heavy libraries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "datasets", "trl", "peft", "accelerate", "rouge_score", "scipy")

PROBE = """
import sys
from alignkit.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit_:
    code = exit_.code
heavy = sorted(m for m in {heavy!r} if m in sys.modules)
print("HEAVY", heavy, "CODE", code, file=sys.stderr)
"""


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        [],
        ["eval", "--help"],
        ["eval", "tofu", "--help"],
        ["eval", "muse", "--help"],
        ["report", "--help"],
        ["push", "--help"],
        ["env", "--help"],
        ["quickstart", "--help"],
        ["eval", "tofu"],  # missing --model: an argument error
        ["eval", "tofu", "--model", "/no/such/model"],  # flag errors come before the evaluation stack
        ["eval", "muse", "--model", "/no/such/model"],
        ["eval", "preference", "--model", "/no/such/model", "--data", "rows.jsonl"],
        ["eval", "preference", "--model", "/no/such/model", "--task", "safety", "--num-prompts", "0"],
        ["nonsense"],
    ],
)
def test_help_and_argument_errors_import_no_heavy_library(argv):
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), *argv],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("HEAVY [] CODE"), proc.stderr[-2000:]


@pytest.fixture
def cold(tmp_path):
    """A cache folder no run has written (the first call after an install), and a small recipe."""
    env = {**os.environ, "ALIGNKIT_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "COLUMNS": "100"}
    recipe = tmp_path / "npo.yaml"
    recipe.write_text(
        "method: npo\nmodel_name_or_path: synthetic:tiny\ntrain_dataset: synthetic:tofu?split=forget10\n"
        "max_steps: 2\n"
    )
    return env, recipe


def _probe(argv, env):
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), *argv],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=120,
    )  # fmt: skip
    return proc, time.perf_counter() - start


@pytest.mark.parametrize(
    ("argv", "code", "says"),
    [
        (["train", "--help"], 0, "methods: "),
        (["train", "--method", "npo", "--help"], 0, "--beta BETA"),
        (["train", "--method", "graddiff", "--help"], 0, "--method graddiff [-h]"),  # an alias
        (
            ["train", "RECIPE", "--learnig_rate", "1"],
            2,
            "unknown key `learnig_rate`. Did you mean `learning_rate`?",
        ),
        (["train", "RECIPE", "--per_device_train_batch_size", "0"], 2, "must be at least 1, got 0."),
        (["train", "RECIPE", "--max_steps", "-1", "--num_train_epochs", "0"], 2, "would train 0 steps"),
        (["train", "RECIPE", "--beta", "nan"], 2, "`beta` must be a finite number, got nan."),
    ],
)
def test_train_help_and_recipe_mistakes_import_no_heavy_library_on_the_first_call(cold, argv, code, says):
    """The first call after an install or a source change, with an empty cache, answers `train --help`,
    `train --method X --help` and key/value mistakes from the keys that ship with alignkit, without
    torch/transformers (it imported the trainer stack: 5-11 s idle, 52 s under load)."""
    env, recipe = cold
    argv = [str(recipe) if a == "RECIPE" else a for a in argv]
    proc, seconds = _probe(argv, env)
    assert proc.stderr.strip().splitlines()[-1] == f"HEAVY [] CODE {code}", proc.stderr[-2000:]
    assert says in proc.stdout + proc.stderr
    print(f"{' '.join(argv)}: {seconds:.2f} s")  # with -s: the timing, Python start-up included


def test_shipped_recipe_keys_are_current():
    """The shipped keys are what the trainer stack says now (regenerate: python -m alignkit.launch.recipe_keys)."""
    from alignkit.launch import recipe_keys

    fresh = recipe_keys.render(recipe_keys.build_schema())
    assert recipe_keys.SHIPPED.read_text(encoding="utf-8") == fresh, (
        "stale: run `python -m alignkit.launch.recipe_keys`"
    )
    recipe_keys.load_schema.cache_clear()
    assert recipe_keys.load_schema() is not None  # its fingerprint matches these sources and versions


@pytest.mark.parametrize("columns", ["80", "150"])
def test_every_method_help_from_the_shipped_keys_is_the_full_parsers(columns, monkeypatch):
    from alignkit.launch import recipe_keys
    from alignkit.launch.recipe import recipe_help
    from alignkit.trainers import METHODS
    from alignkit.trainers.registry import ALIASES

    monkeypatch.setenv("COLUMNS", columns)
    for method in [*sorted(METHODS), *sorted(ALIASES)]:
        assert recipe_keys.method_help(method) == recipe_help(method), method


def test_stale_shipped_keys_are_not_read(tmp_path, monkeypatch, cli):
    """Keys built from other sources (an edited checkout not regenerated, other library versions) are
    never used: help and checks take the full path, which is slower but right."""
    from alignkit.launch import recipe_keys

    schema = json.loads(recipe_keys.SHIPPED.read_text(encoding="utf-8"))
    for action in schema["actions"]:  # what an edit would change...
        if action["dest"] == "beta":
            action["shown"] = "7.0"
    schema["sources"].append("trainers/npo_edited.py")  # ...in a source that is not what was read
    stale = tmp_path / "recipe_keys.json"
    stale.write_text(json.dumps(schema))
    monkeypatch.setattr(recipe_keys, "SHIPPED", stale)
    recipe_keys.load_schema.cache_clear()
    try:
        assert recipe_keys.load_schema() is None and recipe_keys.method_help("npo") is None
        code, out = cli("train", "--method", "npo", "--help")
        assert code == 0 and "--beta BETA" in out and "(default: 7.0)" not in out
    finally:
        recipe_keys.load_schema.cache_clear()


@pytest.mark.parametrize("key", ["model_name_or_path", "train_dataset"])
def test_a_hub_id_without_network_is_one_line_before_torch(cold, key):
    """No HF_HUB_OFFLINE and no network: one line from the connect probe, before torch is imported
    (it came after the recipe parse's torch import: 58.7 s under load; the endpoint here is a closed
    local port, refused at once)."""
    env, recipe = cold
    env = {k: v for k, v in env.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"
    proc, seconds = _probe(["train", str(recipe), f"--{key}", "someone/no-such-thing"], env)
    lines = proc.stderr.strip().splitlines()
    assert lines[-1] == "HEAVY [] CODE 2", proc.stderr[-2000:]
    assert len(lines) == 2 and lines[0].startswith(
        f"error: {recipe}: `{key}`: 'someone/no-such-thing' is not a local path and the Hugging Face Hub "
        "127.0.0.1:9 cannot be reached"
    ), proc.stderr
    print(f"{key}: {seconds:.2f} s")


def test_the_hub_probe_is_bounded_when_connects_hang(monkeypatch):
    """A network that drops packets (connects hang, as to an unroutable endpoint) or a name lookup that
    hangs: the probe still answers within HUB_PROBE_SECONDS (1 s)."""
    from alignkit.models import source

    release = threading.Event()

    def hang(*args, **kwargs):
        release.wait(30)
        raise OSError("released")

    monkeypatch.setattr(source.socket, "create_connection", hang)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example")
    source.hub_unreachable.cache_clear()
    try:
        start = time.perf_counter()
        why = source.hub_unreachable()
        seconds = time.perf_counter() - start
    finally:
        release.set()
        source.hub_unreachable.cache_clear()
    assert why == "hub.example:443 did not answer within 1 s"
    assert seconds < 1.5
