"""``alignkit eval lm-eval``: lm-evaluation-harness on the model alignkit loads, checked offline.

A local lm-eval task (a task YAML over a JSON multiple-choice file written here) runs on the tiny
model; the accuracy lm-eval reports equals an independent computation on the same items: the summed
log-probability of " <choice>" after the prompt, argmax over the choices (acc), and divided by the
choice's length in characters (acc_norm, lm-eval's definition); every log-likelihood matches too.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

ITEMS = [
    ("Where was the author born?", ["Paris", "the sea", "France", "a comedy"], 0),
    ("What does the author write?", ["mystery novels", "water", "a movie", "errors"], 0),
    ("What is the capital of France?", ["Paris", "drama", "Hello", "the author"], 0),
    ("At what temperature does water boil?", ["one hundred degrees", "Paris", "1970", "sea"], 0),
    ("Recommend a movie.", ["a quiet drama about the sea", "boils", "goodbye", "capital"], 0),
    ("How can I help you today?", ["Thank you, goodbye.", "Paris", "novels", "degrees"], 1),
    ("When was the author born?", ["in 1970", "in Paris", "a loud action film", "today"], 0),
    ("What kind of film is loud?", ["an action film", "a drama", "a comedy", "mystery"], 2),
]
TASK_YAML = """\
task: alignkit_tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
"""


def write_task(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "items.json"
    rows = [{"question": q, "choices": c, "answer": a} for q, c, a in ITEMS]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (folder / "alignkit_tiny_mc.yaml").write_text(TASK_YAML.format(data=data))
    return folder


def independent_scores(model_dir: Path) -> tuple[float, float, list[list[float]]]:
    """acc, acc_norm and every choice's log-likelihood, by hand (no lm-eval code)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    acc = norm = 0
    lls = []
    for question, choices, answer in ITEMS:
        context = f"Question: {question}\nAnswer:"
        ctx = tok(context)["input_ids"]
        item = []
        for choice in choices:
            whole = tok(context + " " + choice)["input_ids"]
            cont = whole[len(ctx) :]
            with torch.no_grad():
                logits = model(torch.tensor([whole])).logits[0].float()
            logp = torch.log_softmax(logits[:-1], -1)
            targets = torch.tensor(whole[1:])
            token_lp = logp[torch.arange(len(targets)), targets][-len(cont) :]
            item.append(float(token_lp.sum()))
        lls.append(item)
        acc += int(max(range(len(choices)), key=lambda i: item[i]) == answer)
        lengths = [len(c) for c in choices]  # lm-eval's acc_norm: the choice text, without the delimiter
        norm += int(max(range(len(choices)), key=lambda i: item[i] / lengths[i]) == answer)
    return acc / len(ITEMS), norm / len(ITEMS), lls


needs_lm_eval = pytest.mark.skipif(
    importlib.util.find_spec("lm_eval") is None,
    reason="lm-evaluation-harness is not installed (pip install 'alignkit[lm-eval]'; not in the dev install: "
    "~200 MB and ~2 min)",
)


@needs_lm_eval
def test_lm_eval_accuracy_equals_an_independent_loglikelihood_computation(tiny_model_dir, tmp_path):
    from alignkit.eval.lm_harness import evaluate_lm_eval
    from alignkit.eval.logs import read_results

    tasks = write_task(tmp_path / "tasks")
    result = evaluate_lm_eval(
        str(tiny_model_dir),
        tasks=["alignkit_tiny_mc"],
        include_path=tasks,
        batch_size=4,
        output_dir=tmp_path / "out",
        log_samples=True,
    )
    acc, acc_norm, lls = independent_scores(tiny_model_dir)
    assert result.summary["alignkit_tiny_mc/acc"] == pytest.approx(acc, abs=1e-9)
    assert result.summary["alignkit_tiny_mc/acc_norm"] == pytest.approx(acc_norm, abs=1e-9)
    samples = sorted(result.samples["alignkit_tiny_mc"], key=lambda s: s["doc_id"])
    theirs = [[float(r[0][0]) for r in s["resps"]] for s in samples]
    assert theirs == [pytest.approx(mine, abs=1e-4) for mine in lls]
    assert result.meta["n"]["alignkit_tiny_mc"] == len(ITEMS)
    # The eval layout: report/push read it back as lm-eval results of the task.
    (source,) = read_results(tmp_path / "out")
    assert source.benchmark == "lm-eval" and source.dataset_name == "alignkit_tiny_mc"
    assert source.metrics["alignkit_tiny_mc/acc"] == pytest.approx(acc)
    print(f"lm-eval acc {result.summary['alignkit_tiny_mc/acc']:.4f} / independent {acc:.4f}; "
          f"acc_norm {result.summary['alignkit_tiny_mc/acc_norm']:.4f} / {acc_norm:.4f}")  # fmt: skip


def test_missing_extra_is_one_line_naming_it(tiny_model_dir, monkeypatch, capsys):
    from alignkit.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "lm_eval" else real(name, *a)
    )
    code = main(["eval", "lm-eval", "--model", str(tiny_model_dir), "--tasks", "wmdp_bio"])
    err = capsys.readouterr().err
    assert code == 2 and "pip install 'alignkit[lm-eval]'" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.slow
@needs_lm_eval
def test_training_callback_logs_lm_eval_every_n_steps(tiny_model_dir, tmp_path, monkeypatch):
    """`lm_eval_tasks` in a recipe: the task runs every `lm_eval_steps` steps and lands in the log; the
    last logged accuracy is the trained model's own (re-evaluated from the saved weights)."""
    from alignkit.eval.lm_harness import evaluate_lm_eval
    from alignkit.launch.recipe import load_recipe
    from alignkit.launch.runner import run_recipe

    monkeypatch.setenv("ALIGNKIT_CACHE", str(tmp_path / "cache"))
    tasks = write_task(tmp_path / "tasks")
    recipe = load_recipe(
        None,
        values={
            "method": "npo",
            "model_name_or_path": str(tiny_model_dir),
            "train_dataset": "synthetic:tofu?num_people=20&split=forget10",
            "max_steps": 4,
            "per_device_train_batch_size": 4,
            "learning_rate": 5e-2,
            "save_strategy": "no",
            "report_to": "none",
            "disable_tqdm": True,
            "lm_eval_tasks": ["alignkit_tiny_mc"],
            "lm_eval_steps": 2,
            "lm_eval_include_path": str(tasks),
            "output_dir": str(tmp_path / "run"),
        },
        set_env=False,
    )
    logged = run_recipe(recipe)["train"]["lm_eval"]  # run_info.json keeps the curve
    assert [e["step"] for e in logged] == [2, 4]
    again = evaluate_lm_eval(str(tmp_path / "run"), tasks=["alignkit_tiny_mc"], include_path=tasks)
    assert logged[-1]["lm_eval/alignkit_tiny_mc/acc"] == pytest.approx(again.summary["alignkit_tiny_mc/acc"])
    assert logged[-1]["lm_eval/alignkit_tiny_mc/acc_norm"] == pytest.approx(
        again.summary["alignkit_tiny_mc/acc_norm"]
    )


def test_lora_adapter_folder_loads_on_its_base_merged_or_not(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from alignkit.eval.lm_harness import load_model

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    lora = LoraConfig(
        r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )  # B != 0: it changes logits
    get_peft_model(base, lora).save_pretrained(tmp_path / "adapter")
    ids = torch.tensor([[1, 5, 9, 14, 3]])
    with torch.no_grad():
        plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir)(ids).logits
        unmerged = load_model(str(tmp_path / "adapter"), merge_adapter=False)(ids).logits
        merged = load_model(str(tmp_path / "adapter"), merge_adapter=True)
        assert not hasattr(merged, "peft_config") or not merged.peft_config
        merged = merged(ids).logits
    assert not torch.allclose(unmerged, plain, atol=1e-4)  # the adapter is applied
    assert torch.allclose(merged, unmerged, atol=1e-5)
