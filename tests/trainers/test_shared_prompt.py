"""``share_prompt``: a list's prompt encoded once (packed rows + block mask) gives the flat forward's
log-probs, loss and gradients. float64 models, so agreement is to rounding (the issue asks 1e-5):
the loss to 1e-10; gradients to 1e-6 of each tensor's largest entry, because TRL's fused LM head
accumulates its backward in float32 whatever the model's dtype (trl/kernels/chunked_logprob.py),
and packed rows score fewer positions, so its sums run in another order. Eager attention's softmax
runs in float32 too (transformers' ``eager_attention_forward``), over longer packed rows: 1e-6 there."""

from __future__ import annotations

import pytest
import torch
from trainer_helpers import preference_rows, train_args
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignkit import get_method
from alignkit.trainers.shared_prompt import IGNORE, estimated_costs, pack, worth_packing


def test_packed_layout_of_two_lists_and_a_single_row():
    """Rows: list A (prompt 5 6 7) x 2, list B (prompt 8 9) x 1; 0 is padding."""
    ids = torch.tensor([[5, 6, 7, 1, 2, 0], [5, 6, 7, 3, 0, 0], [8, 9, 4, 4, 4, 0]])
    batch = {
        "input_ids": ids,
        "attention_mask": torch.tensor([[1] * 5 + [0], [1] * 4 + [0] * 2, [1] * 5 + [0]]),
        "completion_mask": torch.tensor([[0, 0, 0, 1, 1, 0], [0, 0, 0, 1, 0, 0], [0, 0, 1, 1, 1, 0]]),
    }
    packed = pack(batch)
    # A: shared 5 6 | 7 1 2 | 7 3 ; B: shared 8 | 9 4 4 4
    assert packed.input_ids.tolist() == [[5, 6, 7, 1, 2, 7, 3], [8, 9, 4, 4, 4, 0, 0]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 3, 4, 2, 3], [0, 1, 2, 3, 4, 0, 0]]
    assert packed.labels.tolist() == [
        [IGNORE, IGNORE, 1, 2, IGNORE, 3, IGNORE],
        [IGNORE, 4, 4, 4, IGNORE, IGNORE, IGNORE],
    ]
    allowed = packed.allowed[0, 0].int().tolist()
    assert allowed[5] == [1, 1, 0, 0, 0, 1, 0]  # the 2nd segment's prompt copy: shared prefix + itself
    assert allowed[6] == [1, 1, 0, 0, 0, 1, 1]
    assert allowed[4] == [1, 1, 1, 1, 1, 0, 0]
    # Unpacking puts each completion log-prob where the flat layout scores it (position t scores t+1).
    values = torch.arange(14.0).view(2, 7)
    flat = packed.unpack(values, (3, 5))
    assert flat.tolist() == [[0, 0, 2, 3, 0], [0, 0, 5, 0, 0], [0, 8, 9, 10, 0]]


def test_rows_with_one_completion_per_prompt_stay_flat():
    batch = {
        "input_ids": torch.tensor([[5, 6, 1], [5, 7, 1]]),
        "attention_mask": torch.ones(2, 3, dtype=torch.long),
        "completion_mask": torch.tensor([[0, 0, 1], [0, 0, 1]]),
    }
    assert pack(batch) is None


def loss_and_grads(name, model_dir, tmp_path, rows, share_prompt, attn, **overrides):
    spec = get_method(name)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float64, attn_implementation=attn)
    trainer = spec.trainer_cls(
        model=model,
        args=train_args(spec, tmp_path, share_prompt=share_prompt, **overrides),
        train_dataset=rows,
        processing_class=AutoTokenizer.from_pretrained(model_dir),
    )
    with torch.no_grad():  # policy != reference, so the log-ratios are not all 0
        for p in trainer.model.parameters():
            p.add_(
                0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel()), dtype=p.dtype)
            )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    if share_prompt != "off":  # the batch does go through packed (under auto too)
        packed = pack(batch)
        assert packed is not None and trainer.args.share_prompt in ("on", "auto")
        assert worth_packing(batch, model.config.hidden_size)
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in trainer.model.named_parameters()}


@pytest.mark.parametrize(
    "name,shape,attn,head,share",
    [
        ("lipo", "ranked", "sdpa", "off", True),
        ("lipo", "ranked", "sdpa", "on", True),  # TRL's fused LM head, labels per packed position
        ("softmax_dpo", "one_vs_n", "sdpa", "off", True),
        ("lipo", "ranked", "eager", "off", True),
        ("dpo", "pairwise", "sdpa", "off", "on"),  # K = 2
        ("dpo", "pairwise", "sdpa", "off", "auto"),  # long prompts, one-token titles: auto packs
    ],
)
def test_shared_prompt_matches_the_flat_forward(tiny_model_dir, tmp_path, name, shape, attn, head, share):
    rows = preference_rows(shape)
    kw = dict(fused_lm_head=head)
    flat_loss, flat_grads = loss_and_grads(name, tiny_model_dir, tmp_path / "flat", rows, "off", attn, **kw)
    shared_loss, shared_grads = loss_and_grads(
        name, tiny_model_dir, tmp_path / "shared", rows, share, attn, **kw
    )
    assert flat_loss.item() != 0
    torch.testing.assert_close(shared_loss, flat_loss, atol=1e-10 if attn == "sdpa" else 1e-6, rtol=0)
    for n, g in flat_grads.items():
        scale = float(g.abs().max())
        assert scale > 0, n
        torch.testing.assert_close(shared_grads[n], g, atol=1e-6 * scale, rtol=0, msg=f"gradient of {n}")


def test_auto_packs_long_prompts_and_keeps_long_completions_flat():
    """The auto rule's decision: pairs with a long shared prompt pack; pairs whose completions dwarf the
    prompt, and long rows where the packed row's dense attention outgrows what the prompt saves, stay flat."""

    def pairs(prompt, completion, k=2):
        ids = torch.arange(5, 5 + prompt + completion).repeat(k, 1)
        mask = torch.zeros_like(ids)
        mask[:, prompt:] = 1
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "completion_mask": mask}

    assert worth_packing(pairs(128, 32), hidden_size=256)  # prompt:completion 4
    assert pack(pairs(128, 32), hidden_size=256) is not None
    assert not worth_packing(pairs(16, 128), hidden_size=256)
    assert pack(pairs(16, 128), hidden_size=256) is None  # auto: flat
    assert pack(pairs(16, 128)) is not None  # on: packed
    flat, shared = estimated_costs(pairs(128, 32), 256)
    assert flat > shared  # 2 x 160 positions against 127 + 2 x 33
    long_flat, long_shared = estimated_costs(pairs(64, 1024), 256)
    assert long_shared > long_flat  # dense 2,113^2 pairs outweigh the 63 positions saved


@pytest.mark.parametrize("given,stored", [(True, "on"), (False, "off"), ("true", "on"), ("auto", "auto")])
def test_share_prompt_takes_auto_on_off_and_the_old_booleans(tmp_path, given, stored):
    spec = get_method("dpo")
    assert spec.config_cls(output_dir=str(tmp_path)).share_prompt == "auto"
    assert spec.config_cls(output_dir=str(tmp_path), share_prompt=given).share_prompt == stored


def test_share_prompt_refuses_an_unknown_value(tmp_path):
    with pytest.raises(ValueError, match="`share_prompt` must be one of"):
        get_method("dpo").config_cls(output_dir=str(tmp_path), share_prompt="sometimes")
