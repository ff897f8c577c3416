"""Multi-step arithmetic word problems with a checkable chain of thought (the offline AFT task).

Each question tells a short story of 2-3 changes to a count ("Ava has 7 pens. She buys 5 more. She
gives away 3. How many pens does Ava have now?"); its gold chain writes one equation per change and
ends in GSM8K's layout: ``"7 + 5 = 12. 12 - 3 = 9.\\n#### 9"``. Rows are ``{"question", "answer"}``, the
published GSM8K schema, so the same loaders, verifier and recipes run on both.

* :func:`verify_answer` (verifier ``arithmetic``): exact final answer (binary feedback).
* :func:`step_score` (verifier ``arithmetic_steps``): the fraction of the gold steps written correctly
  at their place, plus 1 for a correct final answer (ranking feedback; ours, spec
  ``methods-alignment-2.md`` §2 pipeline step 3: how GSM8K-RANK was scored was not established).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from alignkit.data.answers import answers_match, extract_final_answer, gold_answer

NAMES = ("Ava", "Ben", "Cleo", "Dan", "Eve", "Finn", "Gia", "Hugo", "Ivy", "Jon", "Kai", "Lea")
ITEMS = ("apples", "pens", "books", "coins", "shells", "stamps", "cards", "marbles")
# (verb phrase, operator): the change a sentence makes to the count.
ADD = ("buys {n} more", "finds {n} more", "gets {n} more")
SUB = ("gives away {n}", "loses {n}", "sells {n}")
_EQUATION = re.compile(r"(-?\d+)\s*([+\-*x×])\s*(-?\d+)\s*=\s*(-?\d+)")


@dataclass
class ReasoningTask:
    """Rows ``{"question", "answer"}`` (gold chain ending in ``#### N``) and each question's final answer."""

    records: list[dict]
    finals: list[int]

    def __len__(self) -> int:
        return len(self.records)

    def split(self, n: int) -> tuple[ReasoningTask, ReasoningTask]:
        """The first ``n`` questions and the rest (e.g. training and held-out questions)."""
        return (
            ReasoningTask(self.records[:n], self.finals[:n]),
            ReasoningTask(self.records[n:], self.finals[n:]),
        )


def _question(rng: random.Random, num_steps: int, max_value: int) -> tuple[dict, int]:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    count = rng.randint(2, 9)
    sentences, equations = [f"{name} has {count} {item}."], []
    for _ in range(num_steps):
        can_sub = count > 1
        if can_sub and (count + 1 > max_value or rng.random() < 0.5):
            n = rng.randint(1, min(9, count - 1))
            sentences.append(f"Then {name} {rng.choice(SUB).format(n=n)}.")
            equations.append(f"{count} - {n} = {count - n}.")
            count -= n
        else:
            n = rng.randint(1, min(9, max(1, max_value - count)))
            sentences.append(f"Then {name} {rng.choice(ADD).format(n=n)}.")
            equations.append(f"{count} + {n} = {count + n}.")
            count += n
    sentences.append(f"How many {item} does {name} have now?")
    return {"question": " ".join(sentences), "answer": " ".join(equations) + f"\n#### {count}"}, count


def arithmetic_task(
    num_questions: int = 400, min_steps: int = 2, max_steps: int = 3, max_value: int = 20, seed: int = 0
) -> ReasoningTask:
    """``num_questions`` distinct word problems of ``min_steps``-``max_steps`` changes, counts in [1, max_value]."""
    if not 1 <= min_steps <= max_steps:
        raise ValueError(f"need 1 <= min_steps <= max_steps, got {min_steps}, {max_steps}")
    if max_value < 10:
        raise ValueError(f"`max_value` must be >= 10, got {max_value}")
    rng = random.Random(seed)
    records, finals, seen = [], [], set()
    attempts = 0
    while len(records) < num_questions:
        attempts += 1
        if attempts > 100 * num_questions:
            raise ValueError(f"could not draw {num_questions} distinct questions; lower num_questions")
        row, final = _question(rng, rng.randint(min_steps, max_steps), max_value)
        if row["question"] in seen:
            continue
        seen.add(row["question"])
        records.append(row)
        finals.append(final)
    return ReasoningTask(records, finals)


def equations(text: str) -> list[tuple[int, str, int, int]]:
    """The ``a op b = c`` steps of a chain, in order."""
    return [(int(a), op, int(b), int(c)) for a, op, b, c in _EQUATION.findall(text)]


def verify_answer(row: dict, completion: str) -> bool:
    """Verifier ``arithmetic``: the completion's final answer equals the gold one exactly."""
    return answers_match(extract_final_answer(completion), gold_answer(row))


def step_score(row: dict, completion: str) -> float:
    """Verifier ``arithmetic_steps``: (gold steps written correctly at their place) / (gold steps) + 1[right answer].

    In [0, 2]. A step counts when the completion's i-th equation equals the gold chain's i-th (same
    operands, operator and result), so a right answer reached by wrong steps scores below a clean chain.
    """
    gold = equations(row["answer"])
    written = equations(completion)
    right = sum(1 for g, w in zip(gold, written) if g == w)
    return right / max(1, len(gold)) + float(verify_answer(row, completion))
