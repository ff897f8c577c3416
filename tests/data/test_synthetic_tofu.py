"""The generated TOFU-format benchmark: schema, splits, determinism and answer quality."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from alignkit.data.synthetic.tofu import (
    ATTRIBUTES,
    build_tofu_files,
    forget_people_count,
    generate_tofu_benchmark,
    load_jsonl,
    make_people,
    person_qa,
    retain_perturbed_people_count,
    tofu_texts,
)

REAL_TOFU = Path(__file__).resolve().parents[3] / "shared" / "data" / "tofu"

PLAIN_KEYS = ["question", "answer"]
PERTURBED_KEYS = ["question", "answer", "paraphrased_answer", "perturbed_answer", "paraphrased_question"]
OPTION_KEYS = ["question", "option1", "option2", "option3", "option4", "answer"]
GENERAL_PERTURBED_KEYS = ["question", "answer", "perturbed_answer"]

EXPECTED_KEYS = {
    "full.json": PLAIN_KEYS,
    "forget01.json": PLAIN_KEYS,
    "forget05.json": PLAIN_KEYS,
    "forget10.json": PLAIN_KEYS,
    "retain99.json": PLAIN_KEYS,
    "retain95.json": PLAIN_KEYS,
    "retain90.json": PLAIN_KEYS,
    "forget01_perturbed.json": PERTURBED_KEYS,
    "forget05_perturbed.json": PERTURBED_KEYS,
    "forget10_perturbed.json": PERTURBED_KEYS,
    "retain_perturbed.json": PERTURBED_KEYS,
    "real_authors.json": OPTION_KEYS,
    "world_facts.json": OPTION_KEYS,
    "real_authors_perturbed.json": GENERAL_PERTURBED_KEYS,
    "world_facts_perturbed.json": GENERAL_PERTURBED_KEYS,
}


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    return generate_tofu_benchmark(tmp_path_factory.mktemp("tofu_s0"), seed=0)


def _rows(d: Path, name: str) -> list[dict]:
    return load_jsonl(d / name)


def test_writes_exactly_the_tofu_files(bench):
    names = {p.name for p in bench.iterdir()}
    assert names == set(EXPECTED_KEYS) | {"SOURCE.md"}
    assert "seed: 0" in (bench / "SOURCE.md").read_text()


@pytest.mark.parametrize("name", sorted(EXPECTED_KEYS))
def test_json_lines_with_expected_keys(bench, name):
    raw = (bench / name).read_text(encoding="utf-8")
    assert raw.endswith("\n") and not raw.startswith("[")
    lines = raw.split("\n")[:-1]
    assert lines and all(lines)
    for line in lines:
        row = json.loads(line)
        assert isinstance(row, dict)
        assert list(row) == EXPECTED_KEYS[name]
        for key, value in row.items():
            if key == "perturbed_answer":
                assert isinstance(value, list) and all(isinstance(v, str) and v for v in value)
            else:
                assert isinstance(value, str) and value


@pytest.mark.skipif(not REAL_TOFU.is_dir(), reason=f"real TOFU files not present at {REAL_TOFU}")
@pytest.mark.parametrize("name", sorted(EXPECTED_KEYS))
def test_schema_matches_real_tofu(bench, name):
    real_path = REAL_TOFU / name
    real = load_jsonl(real_path)
    gen = _rows(bench, name)
    real_keys = {tuple(r) for r in real}
    assert real_keys == {tuple(r) for r in gen}, "same keys in the same order as the real file"
    if "perturbed_answer" in real[0]:
        assert {len(r["perturbed_answer"]) for r in real} == {len(r["perturbed_answer"]) for r in gen}
    # Separator style: the real option files use '": "', the others the compact '":"'.
    real_line = real_path.read_text(encoding="utf-8").split("\n")[0]
    gen_line = (bench / name).read_text(encoding="utf-8").split("\n")[0]
    assert ('": ' in real_line) == ('": ' in gen_line)


def test_perturbed_counts(bench):
    for name in ("forget01_perturbed.json", "forget10_perturbed.json", "retain_perturbed.json"):
        assert {len(r["perturbed_answer"]) for r in _rows(bench, name)} == {5}
    for name in ("real_authors_perturbed.json", "world_facts_perturbed.json"):
        assert {len(r["perturbed_answer"]) for r in _rows(bench, name)} == {3}


@pytest.mark.parametrize("pct", [1, 5, 10])
def test_split_layout(bench, pct):
    full = _rows(bench, "full.json")
    forget = _rows(bench, f"forget{pct:02d}.json")
    retain = _rows(bench, f"retain{100 - pct:02d}.json")
    # Retain is the head and forget the tail of full, disjoint, together exactly full.
    assert retain + forget == full
    assert len(forget) == forget_people_count(20, pct) * 10
    perturbed = _rows(bench, f"forget{pct:02d}_perturbed.json")
    assert [{"question": r["question"], "answer": r["answer"]} for r in perturbed] == forget


def test_forget_sets_nest_and_retain_eval_is_inside_every_retain(bench):
    f01, f05, f10 = (_rows(bench, f"forget{p:02d}.json") for p in (1, 5, 10))
    assert f10[len(f10) - len(f05) :] == f05 and f05[len(f05) - len(f01) :] == f01
    full = _rows(bench, "full.json")
    rp = _rows(bench, "retain_perturbed.json")
    assert len(rp) == retain_perturbed_people_count(20) * 10 == 20
    assert [{"question": r["question"], "answer": r["answer"]} for r in rp] == full[: len(rp)]
    for p in (90, 95, 99):
        retain = _rows(bench, f"retain{p}.json")
        assert retain[: len(rp)] == full[: len(rp)]
    forget_qs = {r["question"] for r in f10}
    assert not forget_qs & {r["question"] for r in rp}


def test_questions_are_unique(bench):
    qs = [r["question"] for r in _rows(bench, "full.json")]
    assert len(qs) == len(set(qs))


@pytest.mark.parametrize(
    ("n", "pct", "k"),
    [
        (20, 1, 1),
        (20, 5, 1),
        (20, 10, 2),
        (200, 1, 2),
        (200, 5, 10),
        (200, 10, 20),
        (50, 5, 3),
        (10, 10, 1),
        (3, 10, 1),
    ],
)
def test_forget_rounding(n, pct, k):
    # round half up (2.5 -> 3), never below one person, never all people.
    assert forget_people_count(n, pct) == k


def test_retain_eval_rounding():
    assert retain_perturbed_people_count(200) == 20
    assert retain_perturbed_people_count(20) == 2
    assert retain_perturbed_people_count(2) == 1
    # 10% of 14 rounds to 1; forget10 takes 1; so retain_perturbed keeps 1 person.
    assert retain_perturbed_people_count(14) == 1


def test_small_benchmark_still_has_a_forget01_person():
    files = build_tofu_files(num_people=3, questions_per_person=4, seed=5)
    assert len(files["forget01.json"]) == 4
    assert len(files["retain99.json"]) == 8
    assert len(files["retain_perturbed.json"]) == 4


def test_same_seed_same_bytes_other_seed_differs(bench, tmp_path):
    again = generate_tofu_benchmark(tmp_path / "again", seed=0)
    other = generate_tofu_benchmark(tmp_path / "other", seed=1)
    for name in [*EXPECTED_KEYS, "SOURCE.md"]:
        assert (bench / name).read_bytes() == (again / name).read_bytes(), name
    assert (bench / "full.json").read_bytes() != (other / "full.json").read_bytes()
    assert (bench / "forget10_perturbed.json").read_bytes() != (
        other / "forget10_perturbed.json"
    ).read_bytes()
    # The general facts are held fixed across seeds.
    for name in ("real_authors.json", "world_facts_perturbed.json"):
        assert (bench / name).read_bytes() == (other / name).read_bytes()


def test_people_do_not_depend_on_questions_per_person():
    a = person_qa(make_people(6, 3), 4, 3)
    b = person_qa(make_people(6, 3), 10, 3)
    assert [x.answer for x in a] == [x.answer for x in b if x.field in {at.field for at in ATTRIBUTES[:4]}]


def _has_word(value: str, text: str) -> bool:
    return re.search(r"(?<!\w)" + re.escape(value) + r"(?!\w)", text) is not None


@pytest.mark.parametrize("phrasing", ["paraphrased", "answer"])
def test_answers_paraphrases_and_perturbations(phrasing):
    items = person_qa(make_people(30, 7), len(ATTRIBUTES), 7, perturbed_phrasing=phrasing)
    assert len(items) == 30 * len(ATTRIBUTES)
    for it in items:
        # The paraphrase keeps the fact and changes the wording; so does the paraphrased question.
        assert it.paraphrased_answer != it.answer
        assert it.paraphrased_question != it.question
        assert _has_word(it.value, it.answer) and _has_word(it.value, it.paraphrased_answer)
        assert len(set(it.perturbed_answer)) == 5
        for wrong in it.perturbed_answer:
            assert wrong != it.answer and wrong != it.paraphrased_answer
            assert not _has_word(it.value, wrong), (it.value, wrong)
        # Wrong answers share the template of the reference they stand against: the text before
        # and after the value is the same.
        ref = it.paraphrased_answer if phrasing == "paraphrased" else it.answer
        head, _, tail = ref.partition(it.value)
        for wrong in it.perturbed_answer:
            assert wrong.startswith(head) and wrong.endswith(tail)


@pytest.mark.parametrize("kind", ["real_authors", "world_facts"])
def test_option_files(bench, kind):
    options = _rows(bench, f"{kind}.json")
    perturbed = _rows(bench, f"{kind}_perturbed.json")
    assert len(options) == len(perturbed) > 0
    positions = set()
    for o, p in zip(options, perturbed):
        opts = [o[f"option{i}"] for i in range(1, 5)]
        assert opts.count(o["answer"]) == 1 and len(set(opts)) == 4
        positions.add(opts.index(o["answer"]))
        assert (p["question"], p["answer"]) == (o["question"], o["answer"])
        assert sorted(p["perturbed_answer"]) == sorted(x for x in opts if x != o["answer"])
    assert len(positions) > 1, "the true answer must not always sit in the same slot"


def test_tofu_texts(bench):
    texts = tofu_texts(bench)
    assert len(texts) == len(set(texts))
    pert = _rows(bench, "forget01_perturbed.json")[0]
    ra = _rows(bench, "real_authors.json")[0]
    for s in (pert["question"], pert["paraphrased_answer"], pert["perturbed_answer"][-1], ra["option4"]):
        assert s in texts


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_people": 1},
        {"questions_per_person": 0},
        {"questions_per_person": len(ATTRIBUTES) + 1},
        {"forget_percents": (0,)},
        {"num_people": 2, "forget_percents": (80,)},
    ],
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        build_tofu_files(**kwargs)
