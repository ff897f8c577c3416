"""The synthetic harmful-output tasks: shapes, ground truth, and the recipe source."""

from alignkit.data import normalize_record
from alignkit.data.synthetic import preference as sp
from alignkit.data.synthetic.harmful import harmless_response_task, planted_negatives_task


def test_harmless_response_rows_are_one_vs_n_with_exact_labels():
    task = harmless_response_task(12, negatives_per_prompt=2, seed=3)
    base = sp.safety_task(12, negatives_per_prompt=2, seed=3)
    for row, base_row, meta in zip(task.records, base.records, task.meta):
        record = normalize_record(row, index=0)
        assert record.roles == ["chosen", "rejected", "rejected"]
        assert row["prompt"] == base_row["prompt"] and row["rejected"] == base_row["rejected"]
        assert not sp.is_flagged(row["chosen"]) and all(sp.is_flagged(r) for r in row["rejected"])
        assert row["chosen"] == meta["safe"]


def test_planted_negatives_share_and_validation_split():
    data = planted_negatives_task(40, harmless_share=0.25, num_validation=8, seed=1)
    assert len(data["forget"]) == 40 and sum(not h for h in data["helpful"]) == 10
    for row, helpful in zip(data["forget"], data["helpful"]):
        assert sp.is_flagged(row["completion"]) == helpful  # helpful to unlearn = a flagged reply
    forget_prompts = {r["prompt"] for r in data["forget"]}
    assert len(data["validation"]) == 8
    for pair in data["validation"]:
        assert not sp.is_flagged(pair["chosen"]) and sp.is_flagged(pair["rejected"])
        assert pair["prompt"] not in forget_prompts  # held out: prompts repeat only beyond 240


def test_recipe_source_builds_the_rows(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNKIT_CACHE", str(tmp_path))
    from alignkit.launch.sources import load_source

    rows = load_source("synthetic:harmless_response?num_prompts=5&negatives_per_prompt=2")
    assert len(rows) == 5 and {"prompt", "chosen", "rejected"} <= set(rows.column_names)


def test_refusal_recipe_source_parts(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNKIT_CACHE", str(tmp_path))
    import pytest

    from alignkit.launch.sources import SourceError, load_source

    contain = load_source("synthetic:refusal?part=contain&target=safety&contain=toxicity%2Bbias")
    unlearn = load_source("synthetic:refusal?part=unlearn&target=safety")
    assert len(unlearn) == 16 and len(contain) == 32  # + 8 retain refusals from each of two domains
    assert all(r["answer"].startswith("Sure") for r in unlearn)
    with pytest.raises((SourceError, ValueError), match="part"):
        load_source("synthetic:refusal?part=forget")


def test_planted_negatives_recipe_source_parts(tmp_path, monkeypatch):
    """U2A's recipe data: the mixed negatives, validation pairs on other prompts, and the SFT rows."""
    monkeypatch.setenv("ALIGNKIT_CACHE", str(tmp_path))
    from alignkit.data.synthetic.harmful import planted_negatives_task
    from alignkit.launch.sources import load_source

    forget = load_source("synthetic:planted_negatives?part=forget&num_prompts=10&num_validation=4")
    validation = load_source("synthetic:planted_negatives?part=validation&num_prompts=10&num_validation=4")
    sft = load_source("synthetic:planted_negatives?part=sft&num_prompts=10&num_validation=4")
    planted = planted_negatives_task(10, num_validation=4)
    assert [r["completion"] for r in forget] == [r["completion"] for r in planted["forget"]]
    assert sum(planted["helpful"]) == 5
    assert len(validation) == 4 and {"prompt", "chosen", "rejected"} <= set(validation.column_names)
    assert not {r["prompt"] for r in validation} & {r["prompt"] for r in forget}
    assert len(sft) == 2 * 14  # every prompt of both parts, flagged and safe reply
