"""Property tests: random records of every shape, random truncation, checked against an independent model.

The expected tokens are computed here without the collator: the prompt text is rendered by hand
(the tiny chat template is ``<|role|>content<|end|>`` per message, ``<|assistant|>`` as the
generation prompt; a QA row is a one-turn user/assistant conversation under the template and
``Question: {q}\\nAnswer: `` without one), each text is
tokenised on its own, and the truncation policy of ``alignkit.data.collator`` is applied to the lists.
"""

from __future__ import annotations

import math
import string
from dataclasses import dataclass

import datasets
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from alignkit.data import ROLE_IDS, ForgetRetainDataset, PreferenceCollator, RecordError, to_dense

SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ASCII without '<' and '>' so that no random text spells a special token.
ALPHABET = string.ascii_letters + string.digits + " .,;:!?'()-\n"
TEXT = st.text(alphabet=ALPHABET, min_size=1, max_size=24).filter(lambda s: s.strip() != "")
SCORE = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, allow_infinity=False, width=32)

SHAPES = (
    "pairwise",
    "one_vs_n",
    "ranked_scores",
    "ranked_ranks",
    "negatives",
    "qa",
    "prompt_completion",
    "messages",
    "text",
)


def msg(role: str, content: str) -> dict:
    return {"role": role, "content": content}


def render(messages: list[dict]) -> str:
    """The tiny chat template, written out independently of jinja."""
    return "".join(f"<|{m['role']}|>{m['content']}<|end|>" for m in messages)


@dataclass
class Case:
    row: dict
    prompt_text: str
    prompt_specials: bool
    completion_texts: list[str]
    roles: list[str]
    scores: list[float] | None
    needs_template: bool
    shape: str = ""


@st.composite
def chat_prompt(draw) -> list[dict]:
    messages = [msg("system", draw(TEXT))] if draw(st.booleans()) else []
    for _ in range(draw(st.integers(0, 2))):
        messages += [msg("user", draw(TEXT)), msg("assistant", draw(TEXT))]
    return [*messages, msg("user", draw(TEXT))]


@st.composite
def record_case(draw, chat_template: bool = True, shapes: tuple[str, ...] = SHAPES) -> Case:
    """One random row of a random shape, with what the collator must make of it."""
    if not chat_template:
        shapes = tuple(s for s in shapes if s != "messages")
    shape = draw(st.sampled_from(shapes))
    conversational = shape not in ("qa", "text") and (
        shape == "messages" or (chat_template and draw(st.sampled_from([True, True, False])))
    )

    if shape == "qa":
        question, answer = draw(TEXT), draw(TEXT)
        row = {"question": question, "answer": answer}
        if chat_template:  # a one-turn conversation: the answer is the assistant turn
            prompt_text = render([msg("user", question)]) + "<|assistant|>"
            return Case(row, prompt_text, False, [answer + "<|end|>"], ["answer"], None, False, shape)
        prompt_text = f"Question: {question}\nAnswer: "
        return Case(row, prompt_text, True, [answer], ["answer"], None, False, shape)
    if shape == "text":
        text = draw(TEXT)
        return Case({"text": text}, "", True, [text], ["answer"], None, False, shape)
    if shape == "messages":
        prompt, answer = draw(chat_prompt()), draw(TEXT)
        row = {"messages": [*prompt, msg("assistant", answer)]}
        return Case(
            row, render(prompt) + "<|assistant|>", False, [answer + "<|end|>"], ["answer"], None, True, shape
        )

    if conversational:
        prompt = draw(chat_prompt())
        prompt_text, specials = render(prompt) + "<|assistant|>", False

        def completion():
            content = draw(TEXT)
            return [msg("assistant", content)], content + "<|end|>"
    else:
        prompt = draw(TEXT)
        prompt_text, specials = prompt, True

        def completion():
            content = draw(TEXT)
            return content, content

    def completions(n):
        pairs = [completion() for _ in range(n)]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    scores = None
    if shape == "pairwise":
        (chosen, rejected), texts = completions(2)
        row, roles = {"prompt": prompt, "chosen": chosen, "rejected": rejected}, ["chosen", "rejected"]
    elif shape == "one_vs_n":
        values, texts = completions(1 + draw(st.integers(1, 4)))
        row = {"prompt": prompt, "chosen": values[0], "rejected": values[1:]}
        roles = ["chosen"] + ["rejected"] * (len(values) - 1)
    elif shape in ("ranked_scores", "ranked_ranks"):
        values, texts = completions(draw(st.integers(1, 4)))
        k = len(values)
        if shape == "ranked_scores":
            raw = draw(st.lists(SCORE, min_size=k, max_size=k))
            if k > 1 and draw(st.booleans()):
                raw[-1] = raw[0]  # a tie
            row, scores = {"prompt": prompt, "completions": values, "scores": raw}, [float(s) for s in raw]
        else:
            ranks = draw(st.lists(st.integers(1, k), min_size=k, max_size=k))  # ties allowed
            row, scores = (
                {"prompt": prompt, "completions": values, "ranks": ranks},
                [float(r) for r in ranks],  # kept as given
            )
        roles = ["ranked"] * k
    elif shape == "negatives":
        if draw(st.booleans()):
            values, texts = completions(draw(st.integers(1, 4)))
            row = {"prompt": prompt, "rejected": values}
        else:
            (value,), texts = completions(1)
            row = {"prompt": prompt, "rejected": value}
        roles = ["rejected"] * len(texts)
    else:  # prompt_completion
        (value,), texts = completions(1)
        row, roles = {"prompt": prompt, "completion": value}, ["answer"]
        label = draw(st.sampled_from([None, True, False]))
        if label is not None:
            row["label"], roles = label, ["chosen" if label else "rejected"]
    return Case(row, prompt_text, specials, texts, roles, scores, conversational, shape)


LIMIT = st.one_of(st.none(), st.integers(1, 32))
LENGTH = st.one_of(st.none(), st.integers(1, 64))


@dataclass
class Expected:
    prompt: list[int]
    completion: list[int]
    prompt_cut: bool
    completion_cut: bool
    completion_text: str
    prompt_text: str
    prompt_specials: bool


def expected_rows(tok, case: Case, *, mpl, mcl, ml, boundary) -> list[Expected] | None:
    """Independent tokenisation + truncation policy; None when the prompt leaves no room."""
    eos = tok.eos_token_id
    out = []
    for text in case.completion_texts:
        prompt = tok(case.prompt_text, add_special_tokens=case.prompt_specials)["input_ids"]
        if boundary == "separate":
            completion = tok(text, add_special_tokens=False)["input_ids"] + [eos]
        else:
            full = tok(case.prompt_text + text, add_special_tokens=case.prompt_specials)["input_ids"]
            prompt, completion = full[: len(prompt)], full[len(prompt) :] + [eos]
        p, c = prompt, completion
        if mpl is not None:
            p = p[-mpl:]
        if mcl is not None:
            c = c[:mcl]
        if ml is not None:
            if ml - len(p) < 1:
                return None
            c = c[: ml - len(p)]
        cut_p, cut_c = len(p) < len(prompt), len(c) < len(completion)
        out.append(Expected(p, c, cut_p, cut_c, text, case.prompt_text, case.prompt_specials))
    return out


def decode(tok, ids) -> str:
    return tok.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)


@st.composite
def batch_setup(draw, first_shape: str | None = None):
    # "chat": the tiny tokenizer; "bos": the same, prepending BOS like Llama's; "plain": no chat template
    kinds = ["chat", "bos"] if first_shape == "messages" else ["chat", "chat", "bos", "plain"]
    kind = draw(st.sampled_from(kinds))
    chat_template = kind != "plain"
    first = record_case(chat_template, (first_shape,) if first_shape else SHAPES)
    cases = [draw(first), *draw(st.lists(record_case(chat_template), max_size=3))]
    limits = {
        "max_prompt_length": draw(LIMIT),
        "max_completion_length": draw(LIMIT),
        "max_length": draw(LENGTH),
        "boundary": draw(st.sampled_from(["separate", "separate", "joint"])),
        "pad_to_multiple_of": draw(st.sampled_from([None, None, 4, 8])),
    }
    return kind, cases, limits


def check_dense(values: torch.Tensor, group_sizes: torch.Tensor, fill: float) -> None:
    dense, valid = to_dense(values, group_sizes, fill=fill)
    b, k_max = len(group_sizes), int(group_sizes.max())
    assert dense.shape[:2] == valid.shape == (b, k_max)
    assert valid.sum(1).tolist() == group_sizes.tolist()
    for g, k in enumerate(group_sizes.tolist()):
        assert valid[g, :k].all() and not valid[g, k:].any()
    assert torch.equal(dense[valid], values)  # valid slots, in row-major order, are exactly the flat values
    assert (dense[~valid] == fill).all()


@SETTINGS
@given(setup=batch_setup())
def test_collated_batch_matches_independent_tokenisation(tokenizer, plain_tokenizer, bos_tokenizer, setup):
    check_batch({"chat": tokenizer, "plain": plain_tokenizer, "bos": bos_tokenizer}, setup)


@pytest.mark.parametrize("shape", SHAPES)
@settings(SETTINGS, max_examples=12)
@given(data=st.data())
def test_every_shape_collates_like_the_independent_model(
    tokenizer, plain_tokenizer, bos_tokenizer, shape, data
):
    check_batch(
        {"chat": tokenizer, "plain": plain_tokenizer, "bos": bos_tokenizer}, data.draw(batch_setup(shape))
    )


def check_batch(tokenizers: dict, setup) -> None:
    kind, cases, limits = setup
    tok = tokenizers[kind]
    event(f"tokenizer: {kind}")
    collator = PreferenceCollator(tok, **limits)
    mpl, mcl, ml = limits["max_prompt_length"], limits["max_completion_length"], limits["max_length"]
    per_case = [expected_rows(tok, c, mpl=mpl, mcl=mcl, ml=ml, boundary=limits["boundary"]) for c in cases]

    for case in cases:
        event(f"shape: {case.shape}{' (conversational)' if case.needs_template else ''}")
    if any(rows is None for rows in per_case):
        event("prompt leaves no room")
        first_bad = next(i for i, rows in enumerate(per_case) if rows is None)
        with pytest.raises(RecordError, match=rf"^batch, row {first_bad}, field `prompt`: .*leaves no room"):
            collator([c.row for c in cases])
        return

    batch = collator([c.row for c in cases])
    rows = [r for case_rows in per_case for r in case_rows]
    n = len(rows)
    assert batch["num_main"] == n
    longest = max(len(r.prompt) + len(r.completion) for r in rows)
    multiple = limits["pad_to_multiple_of"] or 1
    assert batch["input_ids"].shape == (n, -(-longest // multiple) * multiple)

    ids, attention, mask = batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
    assert ((mask == 1) & (attention == 0)).sum() == 0  # completion_mask ⊆ attention_mask
    event(f"boundary {limits['boundary']}")
    event(f"completion cut: {any(r.completion_cut for r in rows)}")
    event(f"prompt cut: {any(r.prompt_cut for r in rows)}")
    for i, r in enumerate(rows):
        p, c = len(r.prompt), len(r.completion)
        assert ids[i, : p + c].tolist() == r.prompt + r.completion
        assert ids[i, p + c :].eq(tok.pad_token_id).all()
        assert attention[i].tolist() == [1] * (p + c) + [0] * (ids.shape[1] - p - c)
        assert mask[i].tolist() == [0] * p + [1] * c + [0] * (ids.shape[1] - p - c)
        assert ids[i][mask[i].bool()].tolist() == r.completion
        if limits["boundary"] == "separate":
            decoded = decode(tok, r.completion)
            if r.completion_cut:
                assert decoded and (r.completion_text + tok.eos_token).startswith(decoded)
                assert r.completion[-1] != tok.eos_token_id or r.completion_text.endswith(tok.eos_token)
            else:
                assert decoded == r.completion_text + tok.eos_token
            # BOS only where the text is not rendered by the chat template (which brings its own specials)
            bos = tok.bos_token if kind == "bos" and r.prompt_specials else ""
            prompt_decoded = decode(tok, r.prompt)
            if r.prompt_cut:
                assert (bos + r.prompt_text).endswith(prompt_decoded)
            else:
                assert prompt_decoded == bos + r.prompt_text

    ks = [len(c.completion_texts) for c in cases]
    assert batch["group_sizes"].tolist() == ks
    assert batch["group_index"].tolist() == [g for g, k in enumerate(ks) for _ in range(k)]
    assert batch["roles"].tolist() == [ROLE_IDS[role] for c in cases for role in c.roles]
    expected_scores = [
        s for c in cases for s in (c.scores if c.scores is not None else [math.nan] * len(c.roles))
    ]
    torch.testing.assert_close(
        batch["scores"], torch.tensor(expected_scores, dtype=torch.float32), equal_nan=True
    )

    check_dense(batch["scores"].nan_to_num(123.0), batch["group_sizes"], fill=-1.0)
    check_dense(torch.arange(n) * 10 + 5, batch["group_sizes"], fill=-1)
    check_dense(ids[:n], batch["group_sizes"], fill=-1)


@SETTINGS
@given(
    forget_cases=st.lists(record_case(), min_size=1, max_size=3),
    retain_cases=st.lists(record_case(), min_size=1, max_size=3),
    mpl=LIMIT,
    mcl=LIMIT,
    seed=st.integers(0, 2**16),
    epoch=st.integers(0, 5),
)
def test_retain_rows_follow_the_main_rows(tokenizer, forget_cases, retain_cases, mpl, mcl, seed, epoch):
    collator = PreferenceCollator(tokenizer, max_prompt_length=mpl, max_completion_length=mcl)
    forget = datasets.Dataset.from_list([collator.encode(c.row, index=i) for i, c in enumerate(forget_cases)])
    retain_encoded = [collator.encode(c.row, index=i) for i, c in enumerate(retain_cases)]
    retain = datasets.Dataset.from_list(retain_encoded)
    dataset = ForgetRetainDataset(forget, retain, seed=seed)
    dataset.set_epoch(epoch)
    items = [dataset[i] for i in range(len(dataset))]
    batch = collator(items)

    ks = [len(c.completion_texts) for c in forget_cases]
    num_main = sum(ks)
    assert batch["num_main"] == num_main
    assert batch["group_sizes"].tolist() == ks
    assert batch["roles"].shape == batch["scores"].shape == batch["group_index"].shape == (num_main,)

    expected_main = [
        expected_rows(tokenizer, c, mpl=mpl, mcl=mcl, ml=None, boundary="separate") for c in forget_cases
    ]
    expected_retain = []
    retain_options = [list(zip(e["prompt_ids"], e["completion_ids"])) for e in retain_encoded]
    for item in items:
        pairs = list(zip(item["retain_prompt_ids"], item["retain_completion_ids"]))
        assert pairs in retain_options  # a whole retain record, all of its completions
        expected_retain += pairs
    main_rows = [(r.prompt, r.completion) for rows in expected_main for r in rows]
    assert batch["input_ids"].shape[0] == num_main + len(expected_retain)
    for i, (p, c) in enumerate(main_rows + expected_retain):
        row_len = len(p) + len(c)
        assert batch["input_ids"][i, :row_len].tolist() == p + c
        assert batch["attention_mask"][i].sum() == row_len
        assert batch["completion_mask"][i, : len(p)].sum() == 0
        assert batch["completion_mask"][i, len(p) : row_len].eq(1).all()
        assert batch["completion_mask"][i, row_len:].sum() == 0
        assert batch["input_ids"][i, row_len:].eq(tokenizer.pad_token_id).all()
