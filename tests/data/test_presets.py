"""Dataset presets: fixtures written from each dataset card's schema, plus the real rows in
../shared/data/preference_samples (skipped where absent)."""

from __future__ import annotations

import json
import logging
import shutil
import statistics
from pathlib import Path

import pytest
from trl.data_utils import maybe_extract_prompt

from alignkit.data.presets import (
    PRESETS,
    PresetError,
    convert_rows,
    load_preset_rows,
    parse_preset,
    preset_table,
)
from alignkit.data.records import RecordError, normalize_record
from tests.conftest import shared_dir

FIXTURES = Path(__file__).parent / "fixtures" / "presets"


def raw(name: str) -> list[dict]:
    path = next(FIXTURES.glob(f"{name}.json*"))
    text = path.read_text(encoding="utf-8")
    return json.loads(text) if path.suffix == ".json" else [json.loads(line) for line in text.splitlines()]


def rows_of(name: str, preset: str | None = None) -> list[dict]:
    """The preset's rows of the fixture (files are read by ``load_preset_rows`` in the tests below)."""
    return convert_rows(raw(name), preset or name)


def test_files_read_through_the_loader_give_the_same_rows():
    for name in ("ultrafeedback", "sdpo"):
        path = next(FIXTURES.glob(f"{name}.json*"))
        assert list(load_preset_rows(str(path), name)) == rows_of(name)


def records(rows):
    return [normalize_record(dict(r), index=i, source="preset rows") for i, r in enumerate(rows)]


def text_of(completion):
    return completion[0]["content"] if isinstance(completion, list) else completion


# ------------------------------------------------------------------------------ UltraFeedback


def _ratings(completion, aspects):
    values = [completion["annotations"][a]["Rating"] for a in aspects]
    return [float(v) for v in values if v != "N/A"]


@pytest.mark.parametrize("score", ["fine_grained", "overall", "mean", "helpfulness", "truthfulness"])
def test_ultrafeedback_graded_lists_take_the_selected_score(score):
    source = raw("ultrafeedback")
    out = records(rows_of("ultrafeedback", f"ultrafeedback?score={score}"))
    expected = []
    for row in source:
        pairs = []
        for c in row["completions"]:
            if score == "fine_grained":
                value = c["fine-grained_score"]
            elif score == "overall":
                value = c["overall_score"]
            else:
                aspects = (
                    ("helpfulness", "honesty", "instruction_following", "truthfulness")
                    if score == "mean"
                    else (score,)
                )
                ratings = _ratings(c, aspects)
                value = statistics.mean(ratings) if ratings else None
            if value is not None:
                pairs.append((c["response"], value))
        if len(pairs) >= 2:  # a list needs two scored completions
            expected.append((row["instruction"], pairs))
    assert [(r.prompt[0]["content"], list(zip(map(text_of, r.completions), r.scores))) for r in out] == [
        (p, [(t, pytest.approx(v)) for t, v in pairs]) for p, pairs in expected
    ]
    assert all(r.score_kind == "scores" and r.roles == ["ranked"] * len(r.completions) for r in out)


def test_ultrafeedback_missing_ratings_shorten_the_list_and_are_logged(caplog):
    with caplog.at_level(logging.WARNING, logger="alignkit.data.presets"):
        out = convert_rows(raw("ultrafeedback"), "ultrafeedback")
    assert [len(r["completions"]) for r in out] == [4, 2]  # the N/A completion left out; row 2 too
    assert "left out 1 of 3 input row(s)" in caplog.text and "fewer than 2 completions" in caplog.text


def test_ultrafeedback_standard_format_keeps_plain_text():
    out = convert_rows(raw("ultrafeedback"), "ultrafeedback?format=standard")
    assert out[0]["prompt"] == "Name the capital of France."
    assert out[0]["completions"][0] == "The capital of France is Paris."


def test_ultrafeedback_binarized_pairs_with_the_prompt_extracted_and_ties_dropped():
    source = raw("ultrafeedback_binarized")
    out = records(rows_of("ultrafeedback_binarized"))
    assert len(out) == 2  # the third row is a tie
    for row, record in zip(source, out):
        trl = maybe_extract_prompt({k: row[k] for k in ("prompt", "chosen", "rejected")})
        assert record.prompt == trl["prompt"] == row["chosen"][:1]
        assert record.completions == [trl["chosen"], trl["rejected"]]
    assert len(rows_of("ultrafeedback_binarized", "ultrafeedback_binarized?ties=keep")) == 3


# ------------------------------------------------------------------------------ Nectar, HelpSteer2


def test_nectar_ranked_lists_with_multi_turn_prompts():
    source = raw("nectar")
    out = records(rows_of("nectar"))
    assert [r.score_kind for r in out] == ["ranks", "ranks"]
    assert out[0].scores == [a["rank"] for a in source[0]["answers"]]
    assert [text_of(c) for c in out[1].completions] == [a["answer"] for a in source[1]["answers"]]
    assert out[1].prompt == [
        {"role": "user", "content": "Say hello."},
        {"role": "assistant", "content": "Hello there!"},
        {"role": "user", "content": "Now say goodbye politely."},
    ]
    standard = records(rows_of("nectar", "nectar?format=standard"))
    assert standard[1].prompt == source[1]["prompt"]  # verbatim, ending with "Assistant:"
    assert standard[1].completions[0] == " Thank you, goodbye."


def test_helpsteer2_groups_responses_by_prompt_and_weights_attributes():
    source = raw("helpsteer2")
    out = records(rows_of("helpsteer2"))
    assert [len(r.completions) for r in out] == [2, 2, 2]
    assert [r.scores for r in out] == [
        [source[0]["helpfulness"], source[1]["helpfulness"]],
        [source[2]["helpfulness"], source[3]["helpfulness"]],
        [source[4]["helpfulness"], source[5]["helpfulness"]],
    ]
    assert [m["role"] for m in out[1].prompt] == ["user", "assistant", "user"]
    weighted = records(rows_of("helpsteer2", "helpsteer2?weights=helpfulness:1,verbosity:-0.5"))
    assert weighted[2].scores == [3 - 0.5 * 0, 3 - 0.5 * 2]
    with pytest.raises(PresetError, match="unknown attribute 'kindness'"):
        parse_preset("helpsteer2?weights=kindness:1")


# ------------------------------------------------------------------------------ HH-RLHF, PKU, GSM8K


def test_hh_rlhf_pairwise_and_negatives_only():
    source = raw("hh_rlhf")
    standard = records(rows_of("hh_rlhf", "hh_rlhf?format=standard"))
    for row, record in zip(source, standard):
        trl = maybe_extract_prompt(dict(row))
        assert (record.prompt, record.completions) == (trl["prompt"], [trl["chosen"], trl["rejected"]])
    conv = records(rows_of("hh_rlhf"))
    assert [m["role"] for m in conv[1].prompt] == ["user", "assistant", "user"]
    assert text_of(conv[1].completions[1]) == "Go away, fool."
    negatives = records(rows_of("hh_rlhf", "hh_rlhf?shape=negatives"))
    assert [r.roles for r in negatives] == [["rejected"], ["rejected"]]
    assert text_of(negatives[0].completions[0]) == "Tell them they are an idiot."


def test_pku_saferlhf_needs_a_shape_and_maps_each():
    with pytest.raises(PresetError, match=r"needs `shape=`.*pku_saferlhf\?shape=negatives"):
        parse_preset("pku_saferlhf")
    source = raw("pku_saferlhf")
    negatives = records(rows_of("pku_saferlhf", "pku_saferlhf?shape=negatives"))
    assert [[text_of(c) for c in r.completions] for r in negatives] == [
        [source[0]["response_0"]],
        [source[1]["response_0"], source[1]["response_1"]],
    ]  # the all-safe prompt is left out
    for shape in ("safer", "better"):
        pairs = records(rows_of("pku_saferlhf", f"pku_saferlhf?shape={shape}"))
        for row, record in zip(source, pairs):
            winner = row[f"{shape}_response_id"]
            assert [text_of(c) for c in record.completions] == [
                row[f"response_{winner}"],
                row[f"response_{1 - winner}"],
            ]


def test_gsm8k_keeps_the_final_answer_for_a_verifier():
    out = rows_of("gsm8k")
    assert [r["final_answer"] for r in out] == ["7", "2,400"]
    record = normalize_record(out[0], index=0)
    assert record.is_qa and record.extra == {"final_answer": "7"}


def test_sdpo_rows_are_one_vs_n():
    source = raw("sdpo")
    out = records(rows_of("sdpo"))
    for row, record in zip(source, out):
        assert record.roles == ["chosen"] + ["rejected"] * (len(row["itemList"]) - 1)
        assert record.completions[0] == " " + row["trueSelection"]
        assert sorted(c.strip() for c in record.completions) == sorted(row["itemList"])
        assert ", ".join(row["historyList"].split("::")) in record.prompt
    custom = convert_rows(source, "sdpo?template=History: [HistoryHere]. Options: [CansHere]. Answer:")
    assert custom[1]["prompt"] == (
        "History: Paris Nights, The Author. Options: Water Boils, Goodbye Friend, The Capital, Hello There. Answer:"
    )


# ------------------------------------------------------------------------------ errors, layouts


@pytest.mark.parametrize(
    "preset, mutate, field",
    [
        (
            "ultrafeedback",
            lambda r: r["completions"][1].update({"fine-grained_score": "high"}),
            "completions[1].fine-grained_score",
        ),
        ("ultrafeedback", lambda r: r.pop("instruction"), "instruction"),
        ("nectar", lambda r: r["answers"][2].update({"rank": 0}), "answers[2].rank"),
        ("helpsteer2", lambda r: r.update({"helpfulness": 7}), "helpfulness"),
        ("pku_saferlhf?shape=safer", lambda r: r.update({"safer_response_id": 2}), "safer_response_id"),
        (
            "pku_saferlhf?shape=negatives",
            lambda r: r.update({"is_response_0_safe": "no"}),
            "is_response_0_safe",
        ),
        ("gsm8k", lambda r: r.update({"answer": "It is 7."}), "answer"),
        ("sdpo", lambda r: r.update({"trueSelection": "Nowhere"}), "trueSelection"),
        ("hh_rlhf", lambda r: r.update({"rejected": r["chosen"]}), "rejected"),
    ],
)
def test_bad_rows_name_the_preset_row_and_field(preset, mutate, field):
    name = preset.partition("?")[0]
    rows = raw(name)
    mutate(rows[0])
    with pytest.raises(RecordError) as info:
        convert_rows(rows, preset, source="my_copy.jsonl")
    assert info.value.field == field
    assert str(info.value).startswith(f"preset {preset} (my_copy.jsonl), row 0, field `{field}`: ")


def test_unknown_presets_and_options_are_named():
    with pytest.raises(PresetError, match="Did you mean 'ultrafeedback'"):
        parse_preset("ultrafedback")
    with pytest.raises(PresetError, match="has no option `scores`"):
        parse_preset("ultrafeedback?scores=overall")
    with pytest.raises(PresetError, match="`score=best` is not one of"):
        parse_preset("ultrafeedback?score=best")
    assert set(PRESETS) >= {
        "ultrafeedback",
        "ultrafeedback_binarized",
        "nectar",
        "helpsteer2",
        "hh_rlhf",
        "pku_saferlhf",
        "gsm8k",
        "sdpo",
    }


def test_a_local_folder_in_the_hub_layout_reads_like_the_hub(tmp_path):
    # Anthropic/hh-rlhf keeps its subsets in folders: <subset>/<split>.jsonl(.gz)
    (tmp_path / "harmless-base").mkdir()
    shutil.copy(FIXTURES / "hh_rlhf.jsonl", tmp_path / "harmless-base" / "test.jsonl")
    rows = load_preset_rows(str(tmp_path), "hh_rlhf", config="harmless-base", split="test")
    assert len(rows) == 2 and rows[0]["prompt"][0]["role"] == "user"


# ------------------------------------------------------------------------------ real rows


def test_real_hh_harmless_rows():
    path = shared_dir("preference_samples") / "hh-rlhf"
    source = [json.loads(x) for x in (path / "harmless-base" / "test.jsonl").read_text().splitlines()]
    standard = records(load_preset_rows(str(path), "hh_rlhf?format=standard", "harmless-base", "test"))
    assert len(standard) == 30
    for row, record in zip(source, standard):
        trl = maybe_extract_prompt(dict(row))
        assert (record.prompt, record.completions) == (trl["prompt"], [trl["chosen"], trl["rejected"]])
    conv = records(load_preset_rows(str(path), "hh_rlhf", "harmless-base", "test"))
    for row, record in zip(source, conv):
        assert record.prompt[-1]["role"] == "user"
        # the messages rebuild the dialogue, turn for turn (up to whitespace at the turn edges)
        turns = record.prompt + record.completions[0]
        rebuilt = "".join(
            f"\n\n{'Human' if m['role'] == 'user' else 'Assistant'}: {m['content']}" for m in turns
        )
        assert rebuilt.split() == row["chosen"].split()
    negatives = records(load_preset_rows(str(path), "hh_rlhf?shape=negatives", "harmless-base", "test"))
    assert all(r.roles == ["rejected"] for r in negatives) and len(negatives) == 30


def test_real_gsm8k_rows():
    path = shared_dir("preference_samples") / "gsm8k" / "main"
    for split, n in (("test", 30), ("train", 20)):
        out = list(load_preset_rows(str(path / f"{split}.jsonl"), "gsm8k"))
        assert len(out) == n
        for row in out:
            assert row["answer"].endswith("#### " + row["final_answer"])
            assert row["final_answer"].replace(",", "").lstrip("-").isdigit()
    assert out[0]["final_answer"] == "72"  # train row 0: Natalia's clips, 48 + 24


def test_real_sdpo_lastfm_rows():
    path = shared_dir("preference_samples") / "s-dpo" / "lastfm-test.json"
    source = json.loads(path.read_text())
    out = records(load_preset_rows(str(path), "sdpo"))
    assert len(out) == 30
    for row, record in zip(source, out):
        assert len(record.completions) == 20 and record.roles.count("rejected") == 19
        assert record.completions[0] == " " + row["trueSelection"]
        assert all(item in record.prompt for item in row["itemList"])


def test_lists_as_pairs_give_every_strictly_ordered_pair():
    pairs = records(rows_of("ultrafeedback", "ultrafeedback?view=pairs"))
    assert len(pairs) == 5 + 1  # scores [5, 4.5, 2, 2] (the tie gives none) and [4.67, 3.33]
    assert all(r.roles == ["chosen", "rejected"] for r in pairs)
    assert [text_of(c) for c in pairs[0].completions] == [
        "The capital of France is Paris.",
        "Paris is the capital.",
    ]
    assert len(rows_of("nectar", "nectar?view=pairs")) == 2 * 21  # 7 distinct ranks: 7*6/2 pairs each


def test_on_invalid_skip_leaves_bad_rows_out_and_says_so(caplog):
    rows = raw("hh_rlhf")
    rows[0]["rejected"] = rows[0]["chosen"]  # a duplicated dialogue: no split exists
    with pytest.raises(RecordError):
        convert_rows(rows, "hh_rlhf")
    with caplog.at_level(logging.WARNING, logger="alignkit.data.presets"):
        out = convert_rows(rows, "hh_rlhf", on_invalid="skip")
    assert len(out) == 1 and "skipped 1 invalid row(s)" in caplog.text and "row 0" in caplog.text


def test_split_slices_apply_to_a_local_file():
    path = str(FIXTURES / "nectar.jsonl")
    first, rest = (load_preset_rows(path, "nectar", split=s) for s in ("train[:50%]", "train[50%:]"))
    assert len(first) == len(rest) == 1 and first[0]["prompt"] != rest[0]["prompt"]
    assert len(load_preset_rows(path, "nectar", split="test")) == 2  # a file is one split


def test_readme_table_lists_every_preset():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Real preference data: presets", 1)[1].split("\n## ", 1)[0]
    rows = {line.split("|")[1].strip(" `"): line for line in section.splitlines() if line.startswith("| `")}
    for name, dataset, _shape, _fields in preset_table():
        assert name in rows, f"README's preset table misses {name}"
        assert dataset.split(" ")[0].split("/")[-1].lower() in rows[name].lower()
