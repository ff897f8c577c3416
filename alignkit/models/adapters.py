"""A LoRA run's adapter merged into the base model it names (its ``adapter_config.json``)."""

from __future__ import annotations

from pathlib import Path


def save_merged(adapter_dir: str | Path, out: str | Path) -> None:
    """Load the base model with the adapter in ``adapter_dir``, merge it into the weights and save the
    result to ``out`` as safetensors (the tokenizer is the caller's to place)."""
    from peft import AutoPeftModelForCausalLM

    merged = AutoPeftModelForCausalLM.from_pretrained(str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(str(out), safe_serialization=True)
