"""Which step every node resumes from when each node keeps its own ``output_dir`` (``save_on_each_node``).

Each node marks its own copy of ``checkpoint-N`` complete, so a kill between two nodes' markers leaves
one node a step ahead; all ranks must load the same step: the newest complete on every node. The
launched case (a node killed mid-run, both relaunched) is tests/distributed/test_multi_node.py.
"""

from __future__ import annotations

from alignkit.trainers.checkpoints import complete_steps, mark_complete, newest_common_step


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
