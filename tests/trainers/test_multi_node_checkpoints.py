"""Which step every node resumes from when each node keeps its own ``output_dir`` (``save_on_each_node``).

Each node marks its own copy of ``checkpoint-N`` complete, so a kill between two nodes' markers leaves
one node a step ahead; all ranks must load the same step: the newest complete on every node. The
launched case (a node killed mid-run, both relaunched) is tests/distributed/test_multi_node.py.
"""

from __future__ import annotations

from alignkit.trainers.checkpoints import complete_steps, mark_complete, newest_common_step
from alignkit.trainers.node_local import write_deepspeed_latest


def node_dir(root, complete: list[int], partial: list[int] = ()):
    for step in [*complete, *partial]:
        folder = root / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"weights")
        if step in complete:
            mark_complete(folder, step)
    return root


def test_a_node_killed_before_its_marker_makes_every_node_resume_one_checkpoint_earlier(tmp_path):
    ahead = node_dir(tmp_path / "node0", complete=[2, 4, 6])
    behind = node_dir(tmp_path / "node1", complete=[2, 4], partial=[6])  # killed while saving step 6
    per_node = [complete_steps(ahead), complete_steps(behind)]
    assert per_node == [[6, 4, 2], [4, 2]]
    assert newest_common_step(per_node) == 4


def test_no_step_complete_on_every_node_is_none(tmp_path):
    # a node that rotated step 2 away before the other node marked step 4 (what the barrier before the
    # rotation prevents), and a run with no checkpoint at all
    assert newest_common_step([complete_steps(node_dir(tmp_path / "a", [4])), [2]]) is None
    assert newest_common_step([complete_steps(tmp_path / "missing"), []]) is None
    assert newest_common_step([]) is None


def test_a_node_local_deepspeed_checkpoint_gets_the_latest_tag_that_global_rank_0_alone_writes(tmp_path):
    # node 1's copy of a ZeRO checkpoint: its shards, no `latest` (DeepSpeed writes that on global rank 0)
    node1 = tmp_path / "node1" / "checkpoint-4"
    (node1 / "global_step4").mkdir(parents=True)
    write_deepspeed_latest(node1)
    assert (node1 / "latest").read_text() == "global_step4"
    assert sorted(p.name for p in node1.iterdir()) == ["global_step4", "latest"]  # no temporary file left

    node0 = tmp_path / "node0" / "checkpoint-4"  # rank 0's own tag is left as DeepSpeed wrote it
    (node0 / "global_step4").mkdir(parents=True)
    (node0 / "latest").write_text("global_step4\n")
    write_deepspeed_latest(node0)
    assert (node0 / "latest").read_text() == "global_step4\n"

    ddp = tmp_path / "ddp" / "checkpoint-4"  # not a DeepSpeed checkpoint: nothing to tag
    ddp.mkdir(parents=True)
    write_deepspeed_latest(ddp)
    assert not (ddp / "latest").exists()
