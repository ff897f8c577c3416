"""A command's process and the cyclic collector (alignkit.commands.startup): no collection while the model
stack imports, its objects frozen once, later collections see only what the run allocates."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Each probe runs in a fresh interpreter: the freeze happens once per process, so this test process
# (which may have frozen already) cannot show it.
PROBE = """
import gc, json, sys
from alignkit.commands.startup import model_stack_imports

starts = []
gc.callbacks.append(lambda phase, info: starts.append(info["generation"]) if phase == "start" else None)
out = {}
with model_stack_imports():
    import alignkit.eval.tofu  # the TOFU command's stack: torch, transformers, rouge-score's nltk
    out["collections_inside"] = len(starts)
    out["enabled_inside"] = gc.isenabled()
out["enabled_after"] = gc.isenabled()
out["frozen"] = gc.get_freeze_count()
out["visible_after"] = len(gc.get_objects())

class Node:
    pass

def cycles(n):  # n two-object reference cycles, unreachable once made
    for _ in range(n):
        a, b = Node(), Node()
        a.other, b.other = b, a

gc.disable()  # the cycles wait for the collection below
cycles(5000)
with model_stack_imports():  # a second use pauses again but freezes nothing more
    pass
out["frozen_second"] = gc.get_freeze_count()
out["collected"] = gc.collect()  # the cycles made after the freeze are still collected
gc.enable()

gc.disable()
with model_stack_imports():
    pass
out["caller_disabled_kept"] = not gc.isenabled()
gc.enable()
try:
    with model_stack_imports():
        raise KeyError("x")
except KeyError:
    pass
out["enabled_after_error"] = gc.isenabled()
print(json.dumps(out))
"""


def test_model_stack_imports_pause_the_collector_and_freeze_once():
    proc = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=REPO, timeout=300
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    # ~470k objects are created by these imports: with the collector running, several collections
    # (full ones among them) run meanwhile.
    assert out["collections_inside"] == 0
    assert out["enabled_inside"] is False and out["enabled_after"] is True
    assert out["frozen"] > 100_000  # the stack's objects, out of every later collection's sight
    assert out["visible_after"] < out["frozen"] / 10
    assert out["frozen_second"] == out["frozen"]
    assert out["collected"] >= 2 * 5000
    assert out["caller_disabled_kept"] is True
    assert out["enabled_after_error"] is True
