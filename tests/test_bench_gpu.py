"""scripts/bench_gpu.py: its model-FLOPs formula, and its whole run at toy sizes on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import bench_gpu  # noqa: E402


@pytest.mark.parametrize("heads, kv_heads, tied", [(4, 2, True), (4, 4, False)])
def test_train_flops_matches_torch_flop_counter(heads, kv_heads, tied):
    """6·N·tokens + the attention term equals FlopCounterMode's count of a tiny Llama's forward +
    backward, to 1e-12 relative. Eager attention: FlopCounterMode does not count CPU SDPA's kernel."""
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import LlamaConfig, LlamaForCausalLM

    size = {**bench_gpu.TINY, "num_attention_heads": heads, "num_key_value_heads": kv_heads}
    cfg = LlamaConfig(**{**size, "tie_word_embeddings": tied}, attn_implementation="eager")
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    ids = torch.randint(0, cfg.vocab_size, (3, 40))
    with FlopCounterMode(display=False) as counter:
        model(input_ids=ids).logits.float().sum().backward()
    expected = counter.get_total_flops()
    assert bench_gpu.train_flops(cfg, 3, 40) == pytest.approx(expected, rel=1e-12)
    # Fewer positions through the head: only the head's share shrinks.
    head = 6 * cfg.hidden_size * cfg.vocab_size
    assert bench_gpu.train_flops(cfg, 3, 40, head_tokens=100) == pytest.approx(
        expected - head * 20, rel=1e-12
    )


def test_peak_table_tells_the_h100_parts_apart():
    assert bench_gpu.peak_tflops("NVIDIA H100 80GB HBM3") == 989.5  # SXM
    assert bench_gpu.peak_tflops("NVIDIA H100 PCIe") == 756.5
    assert bench_gpu.peak_tflops("NVIDIA H200 NVL") == 835.5
    assert bench_gpu.peak_tflops("NVIDIA A100-SXM4-80GB") is None


def tiny_run(tmp_path, *args: str) -> tuple[dict, str]:
    out = tmp_path / "gpu.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    script = ROOT / "scripts" / "bench_gpu.py"
    cmd = [sys.executable, str(script), "--tiny", "--budget-s", "120", "--json", str(out)]
    done = subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(out.read_text()), done.stdout


def test_tiny_run_reports_every_section_with_numbers_or_a_reason(tmp_path):
    """The whole script at toy sizes on CPU (~12 s): each section has numbers or says why it was skipped."""
    res, stdout = tiny_run(tmp_path, "--dist-configs", "zero3,fsdp2")
    assert res["device"] == "cpu" and res["tiny"]
    assert set(bench_gpu.SECTIONS) <= res.keys()
    assert not any("error" in res[name] for name in bench_gpu.SECTIONS), res
    mfu = res["mfu"]
    assert mfu["tokens_per_s"] > 0 and mfu["mfu"] is None and "no bf16 peak" in mfu["note"]
    dpo = res["dpo_vocab"]
    if "skipped" in dpo:  # ../shared/data/tofu absent
        assert "BENCH_TOFU" in dpo["skipped"]
    else:
        assert dpo["short"]["loss_match"] and dpo["short"]["ours/trl"]["n"] >= 2
        assert "Liger" in dpo["liger"]
    dist = res["distributed"]
    assert "skipped" in dist["zero3"] and "skipped" in dist["fsdp2"]
    vllm = res["vllm"]  # the generate side of D²O's draw alone
    assert vllm["samples_per_s"]["generate"] > 0 and vllm["vllm"] == "not run: vLLM needs CUDA"
    assert "| check | result | target |" in stdout


@pytest.mark.distributed
def test_tiny_distributed_section_launches_a_recipe_and_reads_its_falling_loss(tmp_path):
    """The distributed section's launch and run_info parsing, through the 2-process CPU config (~20 s)."""
    res, _ = tiny_run(tmp_path, "--sections", "distributed", "--dist-configs", "multi_cpu")
    run = res["distributed"]["multi_cpu"]
    assert run["ok"] and run["finite"] and run["loss_last_third"] < run["loss_first_third"], run
