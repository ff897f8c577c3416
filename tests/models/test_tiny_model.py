"""build_tiny_model: deterministic, loads back as an ordinary HF folder, safe weights, usable chat template."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from alignkit.models import CHAT_TEMPLATE, build_tiny_model, train_tokenizer

TEXTS = [
    "The author was born in Paris in 1970 and writes mystery novels.",
    "Question: Where was the author born? Answer: The author was born in Paris.",
    "I don't know the answer to that question.",
    "Hello there! How can I help you today? Thank you, goodbye.",
] * 2
SIZES = {"vocab_size": 320, "hidden_size": 32, "intermediate_size": 64, "max_position_embeddings": 128}


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_builds")
    return {
        "a": build_tiny_model(TEXTS, root / "a", seed=0, **SIZES),
        "b": build_tiny_model(TEXTS, root / "b", seed=0, **SIZES),
        "other_seed": build_tiny_model(TEXTS, root / "c", seed=1, **SIZES),
    }


def test_same_seed_gives_identical_files(builds):
    a, b = builds["a"], builds["b"]
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()
    assert json.loads((a / "config.json").read_text()) == json.loads((b / "config.json").read_text())


def test_different_seed_gives_different_weights(builds):
    a, c = load_file(builds["a"] / "model.safetensors"), load_file(builds["other_seed"] / "model.safetensors")
    assert a.keys() == c.keys()
    differing = [name for name in a if not torch.equal(a[name], c[name])]
    assert "model.embed_tokens.weight" in differing and "lm_head.weight" in differing
    # the tokenizer depends on the texts only
    assert (builds["a"] / "tokenizer.json").read_bytes() == (
        builds["other_seed"] / "tokenizer.json"
    ).read_bytes()


def test_build_does_not_disturb_the_global_rng(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_model(TEXTS, tmp_path, seed=7, **SIZES)
    assert torch.equal(torch.rand(3), expected)


def test_weights_are_safetensors_only(builds):
    files = sorted(p.name for p in builds["a"].iterdir())
    assert "model.safetensors" in files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))]
    with safe_open(builds["a"] / "model.safetensors", framework="pt") as f:
        assert "lm_head.weight" in set(f.keys())
    assert json.loads((builds["a"] / "alignkit_tiny.json").read_text())["seed"] == 0


def test_loads_back_with_auto_classes(builds):
    model = AutoModelForCausalLM.from_pretrained(builds["a"])
    tok = AutoTokenizer.from_pretrained(builds["a"])
    assert isinstance(model, LlamaForCausalLM)
    cfg = model.config
    assert (cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers) == (32, 64, 2)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.max_position_embeddings) == (4, 2, 128)
    assert cfg.vocab_size == len(tok) == 320
    assert cfg.tie_word_embeddings is False
    assert (cfg.pad_token_id, cfg.bos_token_id, cfg.eos_token_id) == (
        tok.pad_token_id,
        tok.bos_token_id,
        tok.eos_token_id,
    )
    assert (tok.pad_token, tok.bos_token, tok.eos_token, tok.unk_token) == ("<pad>", "<s>", "</s>", "<unk>")
    assert tok.pad_token_id != tok.eos_token_id
    assert model.generation_config.pad_token_id == tok.pad_token_id
    assert tok.chat_template == CHAT_TEMPLATE
    for role_token in ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>"):
        assert len(tok(role_token, add_special_tokens=False)["input_ids"]) == 1
    saved = load_file(builds["a"] / "model.safetensors")
    state = model.state_dict()
    assert all(torch.equal(state[name], tensor) for name, tensor in saved.items())


def test_forward_pass_is_finite(builds):
    model = AutoModelForCausalLM.from_pretrained(builds["a"]).eval()
    tok = AutoTokenizer.from_pretrained(builds["a"])
    batch = tok(["Hello there!", "The author was born in Paris in 1970."], padding=True, return_tensors="pt")
    assert batch["attention_mask"][0].sum() < batch["attention_mask"][1].sum()  # padding present
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    with torch.no_grad():
        out = model(**batch, labels=labels)
    assert out.logits.shape == (2, batch["input_ids"].shape[1], 320)
    assert torch.isfinite(out.logits).all()
    assert torch.isfinite(out.loss) and out.loss.item() > 0


def test_tokenizer_training_ignores_input_order():
    forward = train_tokenizer(TEXTS, vocab_size=300)
    backward = train_tokenizer(list(reversed(TEXTS)), vocab_size=300)
    assert forward.backend_tokenizer.to_str() == backward.backend_tokenizer.to_str()


CONTENT = st.text(
    alphabet=st.characters(blacklist_characters="<>", blacklist_categories=("Cs",)), min_size=1, max_size=20
)


@settings(max_examples=50, deadline=None)
@given(
    text=st.text(alphabet=st.characters(blacklist_characters="<", blacklist_categories=("Cs",)), max_size=40)
)
def test_byte_level_round_trip(tokenizer, text):
    """Any text (any script, emoji, control characters) encodes without <unk> and decodes back."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids, clean_up_tokenization_spaces=False) == text


@st.composite
def conversation(draw):
    messages = [{"role": "system", "content": draw(CONTENT)}] if draw(st.booleans()) else []
    for _ in range(draw(st.integers(0, 2))):
        messages += [
            {"role": "user", "content": draw(CONTENT)},
            {"role": "assistant", "content": draw(CONTENT)},
        ]
    return [*messages, {"role": "user", "content": draw(CONTENT)}]


@settings(max_examples=50, deadline=None)
@given(prompt=conversation(), answer=CONTENT)
def test_chat_template_is_prefix_preserving(tokenizer, prompt, answer):
    head = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(
        [*prompt, {"role": "assistant", "content": answer}], add_generation_prompt=False, tokenize=False
    )
    assert full == head + answer + "<|end|>"
    head_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    assert full_ids[: len(head_ids)] == head_ids
    assert head_ids[-1] == tokenizer.convert_tokens_to_ids("<|assistant|>")


def test_a_launched_rank_other_than_0_writes_the_whole_folder(tmp_path):
    """Under a launch every rank may build the model (``sources._materialise`` keeps the first complete
    folder); transformers' save_pretrained writes nothing on a rank other than 0 of a process group, and
    a weightless folder won the race in ZeRO-3 launches on a fresh cache. Rank 1 of a 2-rank group
    (torch's in-process fake backend, no second process) must write the same files as a plain build."""
    import torch.distributed as dist
    from torch.testing._internal.distributed.fake_pg import FakeStore

    plain = build_tiny_model(TEXTS, tmp_path / "plain", **SIZES)
    dist.init_process_group("fake", rank=1, world_size=2, store=FakeStore())
    try:
        ranked = build_tiny_model(TEXTS, tmp_path / "rank1", **SIZES)
    finally:
        dist.destroy_process_group()
    assert sorted(p.name for p in ranked.iterdir()) == sorted(p.name for p in plain.iterdir())
    for name in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json"):
        assert (ranked / name).read_bytes() == (plain / name).read_bytes(), name
    # The files are written by hand (save_pretrained would skip rank 1): they must stay transformers' own.
    AutoModelForCausalLM.from_pretrained(ranked).save_pretrained(tmp_path / "transformers")
    for name in ("model.safetensors", "config.json", "generation_config.json"):
        assert (ranked / name).read_bytes() == (tmp_path / "transformers" / name).read_bytes(), name
