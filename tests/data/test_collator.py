"""PreferenceCollator on concrete batches: layout, truncation policy, TRL conventions, to_dense, retain rows."""

from __future__ import annotations

import math

import datasets
import pytest
import torch
from transformers import AutoTokenizer
from trl.trainer.dpo_trainer import DataCollatorForPreference

from alignkit.data import (
    ROLE_IDS,
    ForgetRetainDataset,
    PreferenceCollator,
    PromptFormat,
    encode_prompt_completion,
    prepare_dataset,
    to_dense,
)

PROMPT = "Question: Where was the author born?\nAnswer: "
ANSWER = "The author was born in Paris."


def ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def decode(tok, token_ids) -> str:
    return tok.decode(list(token_ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)


# --------------------------------------------------------------------------- TRL conventions


def test_pad_token_is_set_and_distinct_from_eos(tokenizer):
    PreferenceCollator(tokenizer)
    assert tokenizer.pad_token == "<pad>"
    assert tokenizer.pad_token_id == 0
    assert tokenizer.eos_token_id == 2


def test_missing_pad_token_falls_back_to_eos(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.pad_token = None
    assert tok.pad_token_id is None
    collator = PreferenceCollator(tok)
    assert tok.pad_token == "</s>"
    assert tok.pad_token_id == tok.eos_token_id == 2
    batch = collator([{"prompt": "p", "chosen": "a", "rejected": "Hello there!"}])
    short = int(batch["attention_mask"][0].sum())
    assert (batch["input_ids"][0, short:] == 2).all()


def test_tokenizer_without_pad_or_eos_is_rejected(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.pad_token = None
    tok.eos_token = None
    with pytest.raises(ValueError, match="neither a pad nor an EOS token"):
        PreferenceCollator(tok)


def test_eos_appended_to_every_completion(tokenizer):
    encoded = PreferenceCollator(tokenizer).encode(
        {"prompt": PROMPT, "chosen": ANSWER, "rejected": ["No.", "Why?"]}
    )
    eos = tokenizer.eos_token_id
    assert encoded["completion_ids"] == [
        ids(tokenizer, ANSWER) + [eos],
        ids(tokenizer, "No.") + [eos],
        ids(tokenizer, "Why?") + [eos],
    ]
    assert encoded["prompt_ids"] == [ids(tokenizer, PROMPT)] * 3


def test_eos_not_doubled_when_the_text_already_ends_with_it(tokenizer):
    encoded = PreferenceCollator(tokenizer).encode({"prompt": "p", "completion": "Paris.</s>"})
    completion = encoded["completion_ids"][0]
    assert completion == ids(tokenizer, "Paris.") + [tokenizer.eos_token_id]
    assert completion.count(tokenizer.eos_token_id) == 1


def test_eos_lost_when_truncated_away(tokenizer):
    full = ids(tokenizer, ANSWER)
    assert len(full) > 3
    encoded = PreferenceCollator(tokenizer, max_completion_length=3).encode(
        {"prompt": "p", "completion": ANSWER}
    )
    assert encoded["completion_ids"] == [full[:3]]
    assert tokenizer.eos_token_id not in encoded["completion_ids"][0]
    # exactly the EOS is cut when the budget equals the text length
    exact = PreferenceCollator(tokenizer, max_completion_length=len(full)).encode(
        {"prompt": "p", "completion": ANSWER}
    )
    assert exact["completion_ids"] == [full]
    kept = PreferenceCollator(tokenizer, max_completion_length=len(full) + 1).encode(
        {"prompt": "p", "completion": ANSWER}
    )
    assert kept["completion_ids"] == [full + [tokenizer.eos_token_id]]


def test_prompt_tokens_never_in_completion_mask(tokenizer):
    rows = [
        {"prompt": PROMPT, "chosen": ANSWER, "rejected": "No."},
        {"question": "Where?", "answer": "Paris."},
        {"text": "Hello there!"},
    ]
    collator = PreferenceCollator(tokenizer)
    encoded = [collator.encode(r) for r in rows]
    batch = collator(encoded)
    prompt_lengths = [len(p) for e in encoded for p in e["prompt_ids"]]
    assert prompt_lengths[:2] == [len(ids(tokenizer, PROMPT))] * 2
    assert prompt_lengths[3] == 0
    for i, n_prompt in enumerate(prompt_lengths):
        assert batch["completion_mask"][i, :n_prompt].sum() == 0
        assert batch["completion_mask"][i, n_prompt] == 1


def test_matches_trl_preference_collator_on_pairwise_rows(tokenizer):
    rows = [
        {"prompt": PROMPT, "chosen": ANSWER, "rejected": "I don't know."},
        {"prompt": "Hello there!", "chosen": "Thank you, goodbye.", "rejected": "No."},
        {
            "prompt": "Recommend a movie:",
            "chosen": " a quiet drama about the sea",
            "rejected": " a loud action film",
        },
    ]
    collator = PreferenceCollator(tokenizer)
    encoded = [collator.encode(r) for r in rows]
    ours = collator(encoded)
    trl_rows = [
        {
            "prompt_ids": e["prompt_ids"][0],
            "chosen_ids": e["completion_ids"][0],
            "rejected_ids": e["completion_ids"][1],
        }
        for e in encoded
    ]
    theirs = DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id)(trl_rows)
    # ours interleaves per prompt [c0, r0, c1, r1, ...]; TRL stacks [c0, c1, ..., r0, r1, ...]
    n = len(rows)
    order = [i // 2 + (i % 2) * n for i in range(2 * n)]
    for key in ("input_ids", "attention_mask", "completion_mask"):
        assert torch.equal(ours[key], theirs[key][order]), key
    assert ours["roles"].tolist() == [ROLE_IDS["chosen"], ROLE_IDS["rejected"]] * n


# --------------------------------------------------------------------------- layout


def test_batch_layout_on_mixed_shapes(tokenizer):
    collator = PreferenceCollator(tokenizer)
    rows = [
        {"prompt": "p", "chosen": "a", "rejected": ["b", "c d"]},
        {"prompt": "q", "completions": ["x", "y"], "ranks": [2, 1]},
        {"text": "Hello"},
    ]
    batch = collator(rows)
    assert batch["num_main"] == 6
    assert batch["group_sizes"].tolist() == [3, 2, 1]
    assert batch["group_index"].tolist() == [0, 0, 0, 1, 1, 2]
    assert batch["roles"].tolist() == [0, 1, 1, 3, 3, 2]
    scores = batch["scores"].tolist()
    assert all(math.isnan(s) for s in scores[:3] + scores[5:])
    assert scores[3:5] == [2.0, 1.0]  # ranks, kept as given
    assert batch["scores"].dtype == torch.float32
    lengths = batch["attention_mask"].sum(1).tolist()
    assert batch["input_ids"].shape == (6, max(lengths))
    for i in range(6):
        n = lengths[i]
        assert batch["attention_mask"][i, :n].eq(1).all() and batch["attention_mask"][i, n:].eq(0).all()
        assert batch["input_ids"][i, n:].eq(tokenizer.pad_token_id).all()
        assert batch["input_ids"][i, n - 1] == tokenizer.eos_token_id
    assert decode(tokenizer, batch["input_ids"][2][batch["completion_mask"][2].bool()]) == "c d</s>"
    assert "ref_logps" not in batch


def test_raw_and_pre_encoded_rows_collate_identically(tokenizer):
    collator = PreferenceCollator(tokenizer, max_length=18)
    rows = [
        {"prompt": PROMPT, "chosen": ANSWER, "rejected": "No."},
        {"question": "Where?", "answer": "Paris."},
    ]
    raw = collator(rows)
    pre = collator([collator.encode(r, index=i) for i, r in enumerate(rows)])
    for key in ("input_ids", "attention_mask", "completion_mask", "group_sizes", "group_index", "roles"):
        assert torch.equal(raw[key], pre[key]), key


def test_pad_to_multiple_of(tokenizer):
    batch = PreferenceCollator(tokenizer, pad_to_multiple_of=8)(
        [{"prompt": "p", "chosen": "a", "rejected": "b c"}]
    )
    longest = int(batch["attention_mask"].sum(1).max())
    assert longest % 8 != 0
    assert batch["input_ids"].shape[1] == 8 * math.ceil(longest / 8)
    assert batch["completion_mask"][:, longest:].sum() == 0


def test_ref_logps_all_or_nothing(tokenizer):
    collator = PreferenceCollator(tokenizer)
    a = collator.encode({"prompt": "p", "chosen": "a", "rejected": "b"})
    b = collator.encode({"prompt": "q", "rejected": "c"})
    batch = collator([{**a, "ref_logps": [-1.5, -2.5]}, {**b, "ref_logps": [-3.0]}])
    assert batch["ref_logps"].tolist() == [-1.5, -2.5, -3.0]
    with pytest.raises(ValueError, match="`ref_logps` must be present for every row"):
        collator([{**a, "ref_logps": [-1.5, -2.5]}, b])


# --------------------------------------------------------------------------- truncation policy


def test_prompt_keeps_its_last_tokens(tokenizer):
    prompt_ids = ids(tokenizer, PROMPT)
    encoded = PreferenceCollator(tokenizer, max_prompt_length=4).encode(
        {"prompt": PROMPT, "completion": ANSWER}
    )
    assert encoded["prompt_ids"] == [prompt_ids[-4:]]
    assert encoded["completion_ids"] == [ids(tokenizer, ANSWER) + [tokenizer.eos_token_id]]


def test_completion_cut_from_the_end_to_fit_max_length(tokenizer):
    prompt_ids, answer_ids = ids(tokenizer, PROMPT), ids(tokenizer, ANSWER)
    max_length = len(prompt_ids) + 4
    collator = PreferenceCollator(tokenizer, max_length=max_length)
    batch = collator([{"prompt": PROMPT, "chosen": ANSWER, "rejected": "No"}])
    assert batch["input_ids"].shape[1] == max_length
    assert batch["input_ids"][0].tolist() == prompt_ids + answer_ids[:4]
    no_ids = ids(tokenizer, "No") + [tokenizer.eos_token_id]
    assert len(no_ids) < 4  # the short completion keeps its EOS
    assert batch["input_ids"][1, : len(prompt_ids) + len(no_ids)].tolist() == prompt_ids + no_ids
    assert batch["completion_mask"].sum(1).tolist() == [4, len(no_ids)]


def test_all_three_limits_together(tokenizer):
    prompt_ids, answer_ids = ids(tokenizer, PROMPT), ids(tokenizer, ANSWER)
    collator = PreferenceCollator(tokenizer, max_prompt_length=5, max_completion_length=4, max_length=8)
    encoded = collator.encode({"prompt": PROMPT, "completion": ANSWER})
    assert encoded["prompt_ids"] == [prompt_ids[-5:]]
    assert encoded["completion_ids"] == [answer_ids[:3]]  # min(4, 8 - 5)


def test_joint_boundary_masks_the_merged_first_answer_token(tokenizer):
    prompt_ids = ids(tokenizer, PROMPT)
    full = ids(tokenizer, PROMPT + ANSWER)
    assert decode(tokenizer, prompt_ids[-1:]) == " "  # the prompt's trailing space...
    assert decode(tokenizer, full[len(prompt_ids) - 1 : len(prompt_ids)]) == " The"  # ...merges into " The"
    encoded = PreferenceCollator(tokenizer, boundary="joint").encode({"prompt": PROMPT, "completion": ANSWER})
    assert encoded["prompt_ids"] == [full[: len(prompt_ids)]]
    assert encoded["completion_ids"] == [full[len(prompt_ids) :] + [tokenizer.eos_token_id]]
    assert decode(tokenizer, encoded["completion_ids"][0]) == " author was born in Paris.</s>"
    separate = PreferenceCollator(tokenizer).encode({"prompt": PROMPT, "completion": ANSWER})
    assert decode(tokenizer, separate["completion_ids"][0]) == "The author was born in Paris.</s>"


def test_unknown_boundary_is_rejected(tokenizer):
    with pytest.raises(ValueError, match="Unknown boundary 'middle'"):
        encode_prompt_completion(tokenizer, "a", "b", boundary="middle")


# --------------------------------------------------------------------------- to_dense


def test_to_dense_scatters_groups_and_marks_padding_invalid():
    values = torch.tensor([10.0, 20.0, 21.0, 22.0, 30.0, 31.0])
    dense, valid = to_dense(values, torch.tensor([1, 3, 2]), fill=-7.0)
    assert dense.tolist() == [[10.0, -7.0, -7.0], [20.0, 21.0, 22.0], [30.0, 31.0, -7.0]]
    assert valid.tolist() == [[True, False, False], [True, True, True], [True, True, False]]
    assert valid.dtype == torch.bool


def test_to_dense_keeps_trailing_dimensions():
    values = torch.arange(12).reshape(4, 3)
    dense, valid = to_dense(values, torch.tensor([2, 2]))
    assert dense.shape == (2, 2, 3)
    assert torch.equal(dense.reshape(4, 3), values)
    assert valid.all()
    dense, valid = to_dense(values, torch.tensor([3, 1]))
    assert dense[1, 0].tolist() == [9, 10, 11]
    assert dense[1, 1:].eq(0).all() and dense[1, 2].eq(0).all()
    assert valid.tolist() == [[True, True, True], [True, False, False]]


def test_to_dense_on_collated_scores(tokenizer):
    batch = PreferenceCollator(tokenizer)(
        [
            {"prompt": "a", "completions": ["x", "y", "z"], "scores": [3.0, 1.0, 2.0]},
            {"prompt": "b", "completions": ["x"], "scores": [5.0]},
        ]
    )
    dense, valid = to_dense(batch["scores"], batch["group_sizes"], fill=float("-inf"))
    assert dense.tolist() == [[3.0, 1.0, 2.0], [5.0, float("-inf"), float("-inf")]]
    assert valid.sum().item() == batch["num_main"] == 4


# --------------------------------------------------------------------------- forget + retain


@pytest.fixture(scope="module")
def forget_retain(tokenizer):
    collator = PreferenceCollator(tokenizer)
    forget_rows = [{"question": f"Question {i}?", "answer": f"Forget answer {i}."} for i in range(6)]
    forget_rows[2] = {"prompt": "Who?", "rejected": ["Him.", "Her."]}  # K may differ per forget row
    retain_rows = [{"question": f"Retain question {i}?", "answer": f"Retain answer {i}."} for i in range(40)]
    forget = prepare_dataset(forget_rows, collator, name="forget")
    retain = prepare_dataset(retain_rows, collator, name="retain")
    return collator, forget, retain


def test_forget_retain_rows_come_after_main_rows(tokenizer, forget_retain):
    collator, forget, retain = forget_retain
    dataset = ForgetRetainDataset(forget, retain, seed=3)
    assert len(dataset) == 6
    items = [dataset[i] for i in range(len(dataset))]
    batch = collator(items)
    assert batch["num_main"] == 7
    assert batch["group_sizes"].tolist() == [1, 1, 2, 1, 1, 1]
    assert (
        batch["roles"].shape == (7,) and batch["scores"].shape == (7,) and batch["group_index"].shape == (7,)
    )
    assert batch["input_ids"].shape[0] == 7 + 6
    main_text = [
        decode(tokenizer, row[m.bool()]) for row, m in zip(batch["input_ids"], batch["completion_mask"])
    ]
    assert main_text[:4] == [
        "Forget answer 0.<|end|></s>",
        "Forget answer 1.<|end|></s>",
        "Him.</s>",
        "Her.</s>",
    ]
    retain_answers = {f"Retain answer {i}.<|end|></s>" for i in range(40)}
    assert all(text in retain_answers for text in main_text[7:])
    for i, item in enumerate(items):
        j = 7 + i
        n = len(item["retain_prompt_ids"][0]) + len(item["retain_completion_ids"][0])
        assert (
            batch["input_ids"][j, :n].tolist()
            == item["retain_prompt_ids"][0] + item["retain_completion_ids"][0]
        )
        assert batch["completion_mask"][j, : len(item["retain_prompt_ids"][0])].sum() == 0
        assert batch["completion_mask"][j].sum() == len(item["retain_completion_ids"][0])


def test_forget_retain_pairing_is_deterministic_and_order_free(forget_retain):
    _, forget, retain = forget_retain

    def pairs(ds, order):
        return {i: tuple(ds[i]["retain_completion_ids"][0]) for i in order}

    a, b = ForgetRetainDataset(forget, retain, seed=3), ForgetRetainDataset(forget, retain, seed=3)
    assert pairs(a, range(6)) == pairs(b, reversed(range(6)))
    epoch0 = pairs(a, range(6))
    a.set_epoch(1)
    assert pairs(a, range(6)) != epoch0
    a.set_epoch(0)
    assert pairs(a, range(6)) == epoch0
    assert pairs(ForgetRetainDataset(forget, retain, seed=4), range(6)) != epoch0
    # the forget item itself is untouched
    assert a[0]["completion_ids"] == forget[0]["completion_ids"]


def test_forget_retain_needs_retain_rows(forget_retain):
    _, forget, _ = forget_retain
    empty = datasets.Dataset.from_dict({"prompt_ids": [], "completion_ids": []})
    with pytest.raises(ValueError, match="The retain dataset is empty"):
        ForgetRetainDataset(forget, empty)


def test_bos_only_where_no_chat_template_rendered_the_prompt(bos_tokenizer):
    tok, bos = bos_tokenizer, bos_tokenizer.bos_token_id
    collator = PreferenceCollator(tok)
    plain = collator.encode({"prompt": "Hello there!", "chosen": "a", "rejected": "b"})
    assert plain["prompt_ids"] == [[bos, *ids(tok, "Hello there!")]] * 2
    chat_qa = collator.encode({"question": "Where?", "answer": "Paris."})
    assert chat_qa["prompt_ids"] == [ids(tok, "<|user|>Where?<|end|><|assistant|>")]
    conv = collator.encode(
        {
            "prompt": [{"role": "user", "content": "Where?"}],
            "completion": [{"role": "assistant", "content": "Paris."}],
        }
    )
    assert conv["prompt_ids"] == chat_qa["prompt_ids"]
    tags = PreferenceCollator(tok, prompt_format=PromptFormat.preset("qa_plain")).encode(
        {"question": "Where?", "answer": "Paris."}
    )
    assert tags["prompt_ids"] == [[bos, *ids(tok, "Question: Where?\nAnswer: ")]]
    for encoded in (plain, chat_qa, conv, tags):
        assert all(bos not in c for c in encoded["completion_ids"])
