"""Verifiers: GSM8K final-answer extraction on the real rows, normalisation, and one-line errors."""

import json
from fractions import Fraction
from pathlib import Path

import pytest

from alignkit.data.answers import extract_final_answer, normalise_answer
from alignkit.data.synthetic.reasoning import arithmetic_task, equations, step_score, verify_answer
from alignkit.data.verifiers import VerifierError, gsm8k_verifier, resolve_verifier, verify

# The real GSM8K rows sit beside the repository in dev checkouts only (../shared/data).
GSM8K = (
    Path(__file__).resolve().parents[2].parent / "shared" / "data" / "preference_samples" / "gsm8k" / "main"
)


def gsm8k_rows() -> list[dict]:
    folder = GSM8K
    if not folder.is_dir():
        pytest.skip(
            f"real data not available: {folder} is absent (it sits beside the repo only in dev checkouts)"
        )
    rows = []
    for name in ("train.jsonl", "test.jsonl"):
        rows += [json.loads(line) for line in (folder / name).read_text().splitlines()]
    return rows


def test_gsm8k_real_rows_gold_chain_is_right_and_a_changed_answer_is_wrong():
    rows = gsm8k_rows()
    assert len(rows) == 50
    for i, row in enumerate(rows):
        final = row["answer"].rsplit("####", 1)[1].strip()
        assert verify(gsm8k_verifier, row, row["answer"], index=i) is True
        # The same chain with another final number, and the "The answer is" form of the right one.
        wrong = row["answer"].rsplit("####", 1)[0] + f"#### {int(final.replace(',', '')) + 1}"
        assert gsm8k_verifier(row, wrong) is False
        assert gsm8k_verifier(row, f"Some steps.\nThe answer is {final}.") is True
    # Calculator annotations and thousands separators in the real data: row 2 of test is 70,000 in the text.
    assert extract_final_answer(rows[22]["answer"]) == "70000"


@pytest.mark.parametrize(
    "text,expected",
    [
        ("18", Fraction(18)),
        ("$18.00", Fraction(18)),
        ("1,000.", Fraction(1000)),
        ("25%", Fraction(25)),
        ("-3.5", Fraction(-7, 2)),
        ("3/4", Fraction(3, 4)),
        ("  Paris  ", "paris"),
    ],
)
def test_normalise_answer(text, expected):
    assert normalise_answer(text) == expected


def test_extraction_prefers_the_last_hashes_then_the_answer_is():
    assert extract_final_answer("a #### 3\n#### 4") == "4"
    assert extract_final_answer("The answer is 5. Wait, the answer is 6.") == "6."
    assert extract_final_answer("#### 7\nThe answer is 8") == "7"
    assert extract_final_answer("no answer here") is None
    assert gsm8k_verifier({"answer": "#### 2"}, "no answer here") is False


def test_synthetic_task_verifiers():
    task = arithmetic_task(50, seed=3)
    assert task.records == arithmetic_task(50, seed=3).records
    assert len({r["question"] for r in task.records}) == 50
    for row, final in zip(task.records, task.finals):
        steps = equations(row["answer"])
        assert 2 <= len(steps) <= 3
        for a, op, b, c in steps:  # every gold step is right arithmetic and within range
            assert c == (a + b if op == "+" else a - b) and 1 <= c <= 20
        assert steps[-1][3] == final
        assert verify_answer(row, row["answer"]) and step_score(row, row["answer"]) == 2.0
        first_only = row["answer"].split(". ")[0] + f". The answer is {final + 1}"
        assert not verify_answer(row, first_only)
        assert step_score(row, first_only) == pytest.approx(1 / len(steps))
        assert resolve_verifier("arithmetic")(row, row["answer"]) is True


def test_verifier_errors_are_one_line_naming_the_row():
    def broken(row, completion):
        raise KeyError("final")

    with pytest.raises(VerifierError, match=r"^train_dataset, row 3: verifier .*broken raised KeyError"):
        verify(broken, {}, "x", index=3, source="train_dataset")
    with pytest.raises(VerifierError, match=r"row 5: verifier .* returned 'yes'; it must return a bool"):
        verify(lambda r, c: "yes", {}, "x", index=5)
    with pytest.raises(VerifierError, match="returned nan"):
        verify(lambda r, c: float("nan"), {}, "x", index=0)
    assert verify(lambda r, c: 1, {}, "x", index=0) == 1.0
    with pytest.raises(
        VerifierError, match="row 0: verifier gsm8k_verifier raised ValueError: the row has no gold"
    ):
        verify(gsm8k_verifier, {"question": "q"}, "#### 1", index=0)


def test_resolve_verifier_by_name_path_or_callable():
    assert resolve_verifier("gsm8k") is gsm8k_verifier
    assert resolve_verifier("alignkit.data.verifiers:gsm8k_verifier") is gsm8k_verifier
    fn = lambda r, c: True  # noqa: E731
    assert resolve_verifier(fn) is fn
    with pytest.raises(VerifierError, match="unknown verifier 'gsm9k'; built-ins: gsm8k"):
        resolve_verifier("gsm9k")
    with pytest.raises(VerifierError, match="cannot import it"):
        resolve_verifier("alignkit.nowhere:fn")
