"""RMU as the WMDP paper's code runs it: one control vector per forget corpus, batches of one corpus in
turn, and rows of <= 50 characters dropped (its rmu/utils.py ``get_data``: ``len(text) > min_len``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from alignkit.losses import control_vector, control_vectors
from alignkit.trainers.rmu import drop_short_texts, topic_batches


def test_one_control_vector_per_topic_is_the_kth_draw_of_the_seeded_generator():
    # spec2 §2e: torch.Generator().manual_seed(0), torch.rand(1,1,4), c = 6.5
    first = torch.tensor([3.4749031, 5.3792663, 0.6195394, 0.9245080])
    vs = control_vectors(4, 6.5, 0, 2)
    assert torch.allclose(vs[0], first, atol=1e-6) and torch.equal(vs[0], control_vector(4, 6.5, 0))
    g = torch.Generator().manual_seed(0)
    torch.rand(4, generator=g)
    second = torch.rand(4, generator=g)  # the WMDP loop draws the cyber vector right after the bio one
    assert torch.allclose(vs[1], second / second.norm() * 6.5, atol=1e-6)
    assert vs.norm(dim=-1).tolist() == pytest.approx([6.5, 6.5])


def test_rows_of_50_characters_or_fewer_are_dropped_as_the_wmdp_code_does():
    rows = [{"text": "x" * 50}, {"text": "y" * 51}, {"text": ""}, {"text": "z" * 200}]
    assert [r["text"][0] for r in drop_short_texts(rows, 50, "retain_dataset")] == ["y", "z"]
    with pytest.raises(ValueError, match="retain_dataset rows have none"):
        drop_short_texts([{"prompt": "a"}], 50, "retain_dataset")


def test_topic_batches_alternate_one_topic_per_batch():
    rows = [{"t": "bio", "i": i} for i in range(5)] + [{"t": "cyber", "i": i} for i in range(4)]
    picked, topics, names = topic_batches(rows, "t", 2)
    assert names == ["bio", "cyber"]
    assert [(r["t"], r["i"]) for r in picked] == [
        ("bio", 0), ("bio", 1), ("cyber", 0), ("cyber", 1), ("bio", 2), ("bio", 3), ("cyber", 2), ("cyber", 3),
    ]  # fmt: skip
    assert topics == [0, 0, 1, 1, 0, 0, 1, 1]  # bio row 4 has no full batch: dropped, as the loop's zip would


def _corpus(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    bio = [
        f"The protein {i} binds the receptor of the virus strain number {i} in the cell wall."
        for i in range(6)
    ]
    cyber = [
        f"The exploit {i} overflows the buffer of the daemon listening on port {1000 + i} today."
        for i in range(6)
    ]
    short = ["Too short a row."]  # <= 50 characters: dropped from each corpus
    for name, rows in (("bio-forget-corpus", bio + short), ("cyber-forget-corpus", short + cyber)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in rows))
    wiki = [f"The river {i} flows through the valley past the old mill and into the lake." for i in range(4)]
    (folder / "wikitext.jsonl").write_text(
        "".join(json.dumps({"text": t}) + "\n" for t in [" = Title = ", *wiki])
    )
    return folder


def test_wmdp_rmu_steers_each_corpus_to_its_own_vector(tmp_path):
    """The recipe's WMDP keys on a tiny model: short rows dropped from forget and retain corpora, bio and
    cyber batches in turn, and each batch's forget loss equal to the unmasked MSE (the WMDP loop's
    F.mse_loss) between block L's output and its own corpus's control vector, computed here from the
    model's hidden states."""
    from alignkit.launch.recipe import load_recipe
    from alignkit.launch.runner import build

    data = _corpus(tmp_path / "wmdp")
    values = {
        "method": "rmu",
        "model_name_or_path": "synthetic:tiny?vocab_size=300",
        "train_dataset": str(data),
        "train_dataset_config": "bio-forget-corpus+cyber-forget-corpus",
        "retain_dataset": str(data),
        "retain_dataset_config": "wikitext",
        "layer": 0,  # hidden_states[1]: the last entry (block 1) would be after the final norm
        "trainable": "wmdp",
        "steering_coeff": 6.5,
        "rmu_reduction": "wmdp",
        "retain_loss": "none",
        "min_text_chars": 50,
        "topic_field": "dataset_config",
        "train_sampling_strategy": "sequential",
        "per_device_train_batch_size": 2,
        "max_steps": 4,
        "report_to": "none",
        "output_dir": str(tmp_path / "out"),
    }
    trainer = build(load_recipe(None, values=values, set_env=False)).trainer
    assert len(trainer.train_dataset) == 12  # 7 + 7 rows, the two short ones dropped
    batches = list(trainer.get_train_dataloader())
    tok = trainer.processing_class
    words = [tok.decode(ids, skip_special_tokens=True).split()[1] for b in batches for ids in b["input_ids"]]
    assert words == ["protein", "protein", "exploit", "exploit"] * 3  # 6 + 6 rows, batches of 2 in turn
    assert trainer.controls.shape == (2, trainer.model.config.hidden_size)
    assert not torch.allclose(trainer.controls[0], trainer.controls[1])
    model = trainer.model.train()
    for b, topic in zip(batches[:2], (0, 1), strict=True):
        with torch.no_grad():
            loss = trainer.compute_loss(model, dict(b))
            n = b["num_main"]
            hidden = model(input_ids=b["input_ids"][:n], attention_mask=b["attention_mask"][:n],
                           output_hidden_states=True).hidden_states[1]  # fmt: skip
        mine = F.mse_loss(hidden, trainer.controls[topic].expand_as(hidden))
        other = F.mse_loss(hidden, trainer.controls[1 - topic].expand_as(hidden))
        assert float(loss) == pytest.approx(float(mine), rel=1e-5) and abs(float(mine) - float(other)) > 1e-3
    # The retain corpus is filtered the same way (the WikiText header row is <= 50 characters).
    assert len(trainer.retain_encoded) == 4


def test_topic_field_needs_sequential_batches():
    from alignkit.trainers.rmu import RMUConfig

    with pytest.raises(ValueError, match="train_sampling_strategy: sequential"):
        RMUConfig(output_dir="x", topic_field="dataset_config", report_to="none")
