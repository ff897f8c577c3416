"""score_texts / generate_texts against independent manual computations, and their invariances."""

from __future__ import annotations

import pytest
import torch

from alignkit.eval.scoring import (
    encode_for_scoring,
    generate_texts,
    postprocess_generation,
    score_texts,
    score_token_ids,
)

PROMPTS = [
    "Question: What is the full name of the author born in Kuwait City, Kuwait on 08/09/1956?\nAnswer: ",
    "Question: Who wrote the play 'Romeo and Juliet'?\nAnswer: ",
    "Question: Where would you find the Eiffel Tower?\nAnswer: ",
    "Question: What gender is author Basil Mahfouz Al-Kuwaiti?\nAnswer: ",
]
TARGETS = [
    "The full name of the fictitious author born in Kuwait City is Basil Mahfouz Al-Kuwaiti.",
    "William Shakespeare",
    "Paris",
    "Author Basil Mahfouz Al-Kuwaiti is male.",
]


def manual_logps(model, prompt_ids, target_ids):
    """model(...).logits -> log_softmax -> gather, one unpadded sequence at a time."""
    ids = torch.tensor([prompt_ids + target_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float()
    logp = logits.log_softmax(-1)
    pos = torch.arange(len(prompt_ids) - 1, len(prompt_ids) + len(target_ids) - 1)
    return logp[pos, torch.tensor(target_ids)]


@pytest.mark.parametrize("boundary", ["separate", "joint"])
def test_score_texts_equals_manual_forward(tofu_model, tofu_tokenizer, boundary):
    scored = score_texts(tofu_model, tofu_tokenizer, PROMPTS, TARGETS, boundary=boundary, batch_size=4)
    eos = tofu_tokenizer.eos_token_id
    for prompt, target, s in zip(PROMPTS, TARGETS, scored):
        if boundary == "separate":
            p = tofu_tokenizer(prompt)["input_ids"]
            t = tofu_tokenizer(target, add_special_tokens=False)["input_ids"] + [eos]
        else:  # open-unlearning: ids(prompt + target), first len(ids(prompt)) masked
            p_len = len(tofu_tokenizer(prompt)["input_ids"])
            full = tofu_tokenizer(prompt + target)["input_ids"]
            p, t = full[:p_len], full[p_len:] + [eos]
        assert s.valid and s.target_ids == t
        expected = manual_logps(tofu_model, p, t)
        torch.testing.assert_close(s.token_logps, expected, atol=1e-5, rtol=1e-5)
        assert s.avg_loss == pytest.approx(float(-expected.double().mean()), abs=1e-5)


def test_joint_boundary_drops_the_merged_first_answer_token(tofu_tokenizer):
    # §1.1 trap: the prompt ends in "Answer: " ("Ġ" alone); "Ġ" + "P" merge in prompt + "Paris", so
    # joint masking never scores the first answer token while separate tokenisation does.
    p_sep, t_sep = encode_for_scoring(tofu_tokenizer, PROMPTS[2], "Paris", boundary="separate")
    p_joint, t_joint = encode_for_scoring(tofu_tokenizer, PROMPTS[2], "Paris", boundary="joint")
    assert tofu_tokenizer.convert_ids_to_tokens(tofu_tokenizer(PROMPTS[2])["input_ids"])[-1] == "Ġ"
    assert tofu_tokenizer.decode(t_sep, skip_special_tokens=True) == "Paris"
    assert tofu_tokenizer.decode(t_joint, skip_special_tokens=True) == "aris"  # "ĠP" went to the prompt side
    assert tofu_tokenizer.decode(p_joint + t_joint, skip_special_tokens=True) == PROMPTS[2] + "Paris"


def test_batching_and_padding_do_not_change_scores(tofu_model, tofu_tokenizer):
    prompts, targets = PROMPTS * 2, TARGETS[::-1] * 2  # 8 different lengths in one batch
    one = score_texts(tofu_model, tofu_tokenizer, prompts, targets, batch_size=1)
    eight = score_texts(tofu_model, tofu_tokenizer, prompts, targets, batch_size=8)
    for a, b in zip(one, eight):
        assert a.target_ids == b.target_ids
        torch.testing.assert_close(a.token_logps, b.token_logps, atol=1e-5, rtol=0)


def test_identical_pairs_are_forwarded_once(tofu_model, tofu_tokenizer):
    stats = {}
    out = score_texts(
        tofu_model, tofu_tokenizer, PROMPTS[:2] * 3, TARGETS[:2] * 3, batch_size=16, stats=stats
    )
    assert stats == {"forwards": 1, "sequences": 2}
    assert out[0].token_logps is out[2].token_logps


def _groups(tok, prompts, targets):
    """Every prompt with every target (its EOS appended): prompts shared by several targets."""
    eos = tok.eos_token_id
    return [
        (tok(p)["input_ids"], tok(t, add_special_tokens=False)["input_ids"] + [eos])
        for p in prompts
        for t in targets
    ]


@pytest.mark.parametrize("batch_size", [1, 5])
def test_shared_prompt_scores_are_the_unpadded_forward(tofu_model, tofu_tokenizer, batch_size):
    pairs = _groups(tofu_tokenizer, PROMPTS, TARGETS)  # 4 prompts x 4 targets
    one_token = tofu_tokenizer(PROMPTS[0])["input_ids"][:1]
    pairs += [(one_token, pairs[0][1]), (one_token, pairs[1][1])]  # nothing to share before one token
    argmax = [i % 3 == 0 for i in range(len(pairs))]
    stats = {}
    scored = score_token_ids(
        tofu_model,
        pairs,
        pad_token_id=0,
        batch_size=batch_size,
        argmax=argmax,
        share_prompt="on",
        stats=stats,
    )
    assert (
        stats["shared_rows"] == 16
    )  # batch_size 2: two windows of 16 rows at most (8 batches), each whole prompts
    for (p, t), s, want in zip(pairs, scored, argmax):
        assert s.valid and s.target_ids == t
        torch.testing.assert_close(s.token_logps, manual_logps(tofu_model, p, t), atol=1e-5, rtol=0)
        if want:
            ids = torch.tensor([p + t])
            with torch.no_grad():
                best = tofu_model(input_ids=ids).logits[0, len(p) - 1 : -1].argmax(-1).tolist()
            assert s.argmax_ids == best
        else:
            assert s.argmax_ids is None


def test_auto_shares_a_long_prompt_not_a_short_one(tofu_model, tofu_tokenizer):
    long_prompt = " ".join(PROMPTS)  # ~80 tokens before short answers: the prompt is most of each row
    stats = {}
    score_token_ids(
        tofu_model, _groups(tofu_tokenizer, [long_prompt], TARGETS[1:3]), pad_token_id=0, stats=stats
    )
    assert stats.get("shared_rows") == 2
    # A two-token prompt before long answers: sharing saves next to nothing, the flat layout is kept.
    short = _groups(tofu_tokenizer, ["Q:"], [TARGETS[0], TARGETS[3]])
    assert len(short[0][0]) == 2
    stats = {}
    score_token_ids(tofu_model, short, pad_token_id=0, stats=stats)
    assert "shared_rows" not in stats and stats["forwards"] == 1
    with pytest.raises(ValueError, match="share_prompt"):
        score_token_ids(tofu_model, short, pad_token_id=0, share_prompt=True)


def test_sliding_window_models_are_scored_flat(tofu_tokenizer):
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    config = MistralConfig(
        vocab_size=len(tofu_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, sliding_window=6, max_position_embeddings=256,
    )  # fmt: skip
    model = MistralForCausalLM(config).eval()
    pairs = _groups(tofu_tokenizer, PROMPTS[:2], TARGETS)
    stats = {}
    scored = score_token_ids(model, pairs, pad_token_id=0, batch_size=8, share_prompt="on", stats=stats)
    assert "shared_rows" not in stats
    for (p, t), s in zip(pairs, scored):  # the window applies: unpadded forwards, one at a time
        torch.testing.assert_close(s.token_logps, manual_logps(model, p, t), atol=1e-5, rtol=0)


def test_items_without_target_tokens_are_invalid(tofu_model, tofu_tokenizer):
    # A one-token answer "P" merges into the prompt's trailing space ("ĠP"); without EOS nothing is left.
    p, t = encode_for_scoring(tofu_tokenizer, PROMPTS[2], "P", boundary="joint", add_eos=False)
    assert t == []
    (s,) = score_texts(tofu_model, tofu_tokenizer, [PROMPTS[2]], ["P"], boundary="joint", add_eos=False)
    assert not s.valid and s.token_logps.numel() == 0
    assert s.avg_loss != s.avg_loss  # NaN
    # With EOS (both references append it) the item is scored on EOS alone, as open-unlearning does.
    (s,) = score_texts(tofu_model, tofu_tokenizer, [PROMPTS[2]], ["P"], boundary="joint")
    assert s.valid and s.target_ids == [tofu_tokenizer.eos_token_id]


def test_truncation_conventions(tofu_tokenizer):
    eos = tofu_tokenizer.eos_token_id
    p, t = encode_for_scoring(tofu_tokenizer, PROMPTS[0], TARGETS[0], boundary="joint")
    n = len(p) + len(t) - 1  # text tokens without EOS
    limit = n - 3
    # open-unlearning: cut the text to `limit`, then append EOS anyway
    p2, t2 = encode_for_scoring(tofu_tokenizer, PROMPTS[0], TARGETS[0], boundary="joint", max_length=limit)
    assert len(p2) + len(t2) == limit + 1 and t2[-1] == eos
    # original TOFU: EOS counts inside the limit and is dropped when the text fills it
    p3, t3 = encode_for_scoring(
        tofu_tokenizer,
        PROMPTS[0],
        TARGETS[0],
        boundary="joint",
        max_length=limit,
        max_length_includes_eos=True,
    )
    assert len(p3) + len(t3) == limit and t3[-1] != eos
    p4, t4 = encode_for_scoring(
        tofu_tokenizer,
        PROMPTS[0],
        TARGETS[0],
        boundary="joint",
        max_length=n + 1,
        max_length_includes_eos=True,
    )
    assert t4[-1] == eos and len(p4) + len(t4) == n + 1


def test_generation_is_batch_invariant_and_budgeted(tofu_model, tofu_tokenizer):
    one = generate_texts(tofu_model, tofu_tokenizer, PROMPTS, max_new_tokens=12, batch_size=1)
    four = generate_texts(tofu_model, tofu_tokenizer, PROMPTS, max_new_tokens=12, batch_size=4)
    assert one == four
    assert all(isinstance(g, str) for g in one)
    # original TOFU budget: prompt + new tokens <= max_total_length, per item
    lens = [len(tofu_tokenizer(p)["input_ids"]) for p in PROMPTS]
    budget = min(lens) + 5
    stats = {}
    from alignkit.eval.scoring import generate_token_ids

    new = generate_token_ids(
        tofu_model,
        tofu_tokenizer,
        [tofu_tokenizer(p)["input_ids"] for p in PROMPTS],
        max_new_tokens=50,
        max_total_length=budget,
        stats=stats,
    )
    assert [len(x) for x in new] == [max(0, min(50, budget - n)) for n in lens]
    full = generate_token_ids(
        tofu_model,
        tofu_tokenizer,
        [tofu_tokenizer(PROMPTS[lens.index(min(lens))])["input_ids"]],
        max_new_tokens=5,
    )
    assert new[lens.index(min(lens))] == full[0]  # greedy is prefix-stable: cutting is exact


def test_postprocessing_cuts_at_eos_text_then_stop_strings():
    text = " Paris\n\nQuestion: next</s> tail"
    assert postprocess_generation(text, eos_text="</s>") == "Paris\n\nQuestion: next"
    assert (
        postprocess_generation(text, eos_text="</s>", stop_strings=("\n\n", "\nQuestion", "Question:"))
        == "Paris"
    )


def test_generate_with_stop_strings(tofu_model, tofu_tokenizer):
    plain = generate_texts(tofu_model, tofu_tokenizer, PROMPTS[:2], max_new_tokens=16)
    # Stop at the first character the model produced: the output must be cut before it.
    stops = tuple(g[1:3] for g in plain if len(g) > 3)
    cut = generate_texts(tofu_model, tofu_tokenizer, PROMPTS[:2], max_new_tokens=16, stop_strings=stops)
    for g, c in zip(plain, cut):
        assert g.startswith(c) and all(s not in c for s in stops if s)


@pytest.mark.parametrize("batch_size", [4, 2, 3])
def test_rows_leave_the_batch_at_eos_with_generates_tokens(tofu_model, tofu_tokenizer, batch_size):
    """The decoding loop that drops finished rows (and, with fewer rows in flight than prompts, prefills the
    next prompts into the running batch) gives model.generate's tokens up to each row's EOS."""
    import copy

    from alignkit.eval.scoring import generate_token_ids

    ids = [tofu_tokenizer(p)["input_ids"] for p in PROMPTS]
    # Sharper weights make the greedy path depend on every position and cache entry (the random tiny
    # model's argmax barely moves when a row's positions are off by one).
    model = copy.deepcopy(tofu_model)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    free = generate_token_ids(model, tofu_tokenizer, ids, max_new_tokens=20, batch_size=4)
    # An "EOS" the model emits at different steps in different rows, so rows end mid-batch.
    counts = {}
    for row in free:
        for t in row[1:15]:
            counts[t] = counts.get(t, 0) + 1
    eos = max(counts, key=counts.get)
    model.generation_config.eos_token_id = eos
    stats = {}
    ours = generate_token_ids(
        model, tofu_tokenizer, ids, max_new_tokens=20, batch_size=batch_size, stats=stats
    )
    assert stats["generated_sequences"] == len(ids)
    ends = [row.index(eos) + 1 if eos in row else len(row) for row in ours]
    assert len(set(ends)) > 1 and min(ends) < 20  # rows did leave the batch at different steps
    with torch.no_grad():
        width = max(map(len, ids))
        padded = torch.tensor([[tofu_tokenizer.pad_token_id] * (width - len(x)) + x for x in ids])
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids])
        ref = model.generate(
            input_ids=padded, attention_mask=mask, max_new_tokens=20, do_sample=False, eos_token_id=eos,
            pad_token_id=tofu_tokenizer.pad_token_id,
        )[:, width:].tolist()  # fmt: skip
    for row, want, end in zip(ours, ref, ends):
        assert row == want[:end]
