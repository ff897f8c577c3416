"""scripts/alignment_mechanisms.py at its smallest setting (one seed, tiny sizes): every experiment
trains its arms, scores them and writes the JSON, tables and figures (a smoke run, not a result)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "alignment_mechanisms.py"


def test_smallest_setting_writes_its_json(tmp_path):
    spec = importlib.util.spec_from_file_location("alignment_mechanisms", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--tiny", "--seeds", "0", "--out", str(tmp_path)]) == 0
    logged = json.loads((tmp_path / "mechanisms.json").read_text())
    assert logged["seeds"] == [0] and logged["tiny"] is True
    result = logged["results"]["0"]
    assert set(result["sdpo"]) == {
        "sft",
        "sdpo_n1",
        "sdpo_n3",
        "sdpo_n7",
        "sdpo_n15",
        "dpo_24seq",
        "sdpo_n3_24seq",
    }
    assert {"lipo_lambda", "dpo_all_pairs", "dpo_best_worst", "list_mle", "pair_logistic"} <= set(
        result["lipo"]
    )
    for experiment in script.EXPERIMENTS:
        for arm, summary in result[experiment].items():
            assert 0.0 <= summary["generation_score"] <= 1.0, (experiment, arm)
        assert (tmp_path / f"{experiment}.png").stat().st_size > 1000
    # The reference is the SFT model: its log-probs did not move.
    assert result["entanglement"]["sft"]["chosen_logp_change"] == 0.0
    # The entanglement arms were watched by the EntanglementMonitor (probe log-probs moved, gradients
    # measured) and the floor arm logged its multiplier.
    for arm in ("dpo", "dpop", "chosen_floor"):
        summary = result["entanglement"][arm]
        assert summary["probe_chosen_logp_change"] != 0.0 and -1.0 <= summary["entanglement_cos"] <= 1.0, arm
    assert result["entanglement"]["chosen_floor"]["floor_lambda_max"] >= 0.0
    assert "against SFT, per seed" in (tmp_path / "mechanisms.md").read_text()
    assert {row["verdict"] for row in logged["comparisons"]} <= {"held", "did not hold", "reversed"}
    assert "Pre-registered comparisons" in (tmp_path / "mechanisms.md").read_text()
