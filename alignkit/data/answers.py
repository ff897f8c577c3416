"""Final answers of chains of thought: extraction and normalised comparison (GSM8K style).

The rule is ours (AFT's paper does not state one; spec ``methods-alignment-2.md`` §2, pipeline step
3): the answer follows the last ``####``, else the last "The answer is"; numbers compare as exact
fractions after removing commas, ``$``, ``%`` and a trailing period, other text after whitespace and
case normalisation.
"""

from __future__ import annotations

import re
from fractions import Fraction

_LEADING_NUMBER = re.compile(r"[-+]?\$?\s?(\d[\d,]*(\.\d+)?|\.\d+)(/\d+)?%?\.?")
_NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)(/\d+)?$")


def extract_final_answer(text: str) -> str | None:
    """The final answer of a chain of thought: after the last ``####``, else after the last "The answer is".

    The rest of that line, or only its leading number when it starts with one ("5. So ..." -> "5.").
    """
    lowered = text.lower()
    at, marker = text.rfind("####"), "####"
    if at < 0:
        at, marker = lowered.rfind("the answer is"), "the answer is"
    if at < 0:
        return None
    rest = text[at + len(marker) :].lstrip(" :\t").split("\n", 1)[0].strip()
    number = _LEADING_NUMBER.match(rest)
    answer = number.group(0) if number else rest
    return answer or None


def normalise_answer(answer: str) -> str | Fraction:
    """A number as an exact ``Fraction`` (``"1,000"``, ``"$18.00"``, ``"25%"`` -> 1000, 18, 25), else spaced text."""
    text = answer.strip().rstrip(".").strip()
    bare = text.replace(",", "").replace("$", "").replace("%", "").strip()
    if _NUMBER.match(bare):
        return Fraction(bare)
    return " ".join(text.split()).lower()


def answers_match(predicted: str | None, gold: str | None) -> bool:
    if predicted is None or gold is None:
        return False
    return normalise_answer(predicted) == normalise_answer(gold)


def gold_answer(row: dict) -> str | None:
    """The gold final answer of a row: its ``final`` field, else extracted from ``answer`` / ``completion``."""
    if row.get("final") is not None:
        return str(row["final"])
    for name in ("answer", "completion", "reference"):
        value = row.get(name)
        if isinstance(value, list) and value and isinstance(value[-1], dict):
            value = value[-1].get("content")
        if isinstance(value, str):
            return extract_final_answer(value)
    return None
