"""ROUGE references are the whole answer, as open-unlearning scores them (issue 11 §1).

The tiny byte-level BPE tokenizer merges the prompt's trailing space into the answer's first token
when prompt and answer are tokenised together (``"Answer: " + "The ..."`` -> ``"Answer:" "ĠThe"``),
the case where slicing the joint ids at ``len(ids(prompt))`` loses the first word.
"""

from __future__ import annotations

import pytest

from alignkit.eval.protocols import OPEN_UNLEARNING, TOFU_ORIG
from alignkit.eval.tofu import _Encoder, resolve_prompt_format

QA = [
    ("Where was the author born?", "The author was born in Paris in 1970."),
    ("What is the capital of France?", "The capital of France is Paris."),
    ("How can I help?", "Hello there! How can I help you today?"),
]


def _merges(tokenizer, prompt: str, answer: str) -> bool:
    """Whether ids(prompt + answer) cut at len(ids(prompt)) loses text of the answer."""
    ids = tokenizer(prompt + answer)["input_ids"]
    tail = ids[len(tokenizer(prompt)["input_ids"]) :]
    return tokenizer.decode(tail, skip_special_tokens=True).strip() != answer


@pytest.mark.parametrize(
    "protocol", [OPEN_UNLEARNING, TOFU_ORIG, OPEN_UNLEARNING.replace(boundary="separate")]
)
def test_tofu_rouge_reference_is_the_whole_answer(tokenizer, protocol):
    enc = _Encoder(tokenizer, resolve_prompt_format("qa_plain", tokenizer), protocol)
    merged = 0
    for question, answer in QA:
        merged += _merges(tokenizer, enc.full_prompt(question), answer)
        assert enc.rouge_reference(question, answer) == answer
    assert merged >= 2  # cases where the joint slice loses the first word ("The")


def test_tofu_rouge_reference_in_chat_mode(tokenizer):
    enc = _Encoder(tokenizer, resolve_prompt_format("chat", tokenizer), OPEN_UNLEARNING)
    for question, answer in QA:
        assert enc.rouge_reference(question, answer) == answer
