"""``alignkit train --accelerate_config`` over several machines: the per-node flags reach accelerate, every
node keeps the config's rendezvous port (a free port picked per node would differ), and a missing address
is one line. The launch itself is tests/distributed/test_multi_node.py (two "nodes" on one host)."""

from __future__ import annotations

import argparse

from alignkit.commands.train import launch_command


def args(recipe, **flags) -> argparse.Namespace:
    base = dict(accelerate_config="multi_node_ddp", num_processes=None, mixed_precision=None)
    base.update(main_process_port=None, num_machines=None, machine_rank=None, main_process_ip=None)
    return argparse.Namespace(**{**base, **flags}, recipe=str(recipe))


def flag(cmd: list[str], name: str) -> str | None:
    return cmd[cmd.index(name) + 1] if name in cmd else None


def test_each_node_passes_its_rank_and_keeps_the_configs_port(recipe_file):
    cmd = launch_command(args(recipe_file, machine_rank=1, main_process_ip="10.0.0.1"), [])
    assert flag(cmd, "--machine_rank") == "1" and flag(cmd, "--main_process_ip") == "10.0.0.1"
    assert "--main_process_port" not in cmd  # multi_node_ddp.yaml's 29500 on every node
    one = launch_command(args(recipe_file, accelerate_config="multi_cpu"), [])
    assert (
        int(flag(one, "--main_process_port")) > 0
    )  # one machine: a free port, so launches can run side by side


def test_several_machines_without_an_address_is_one_line(cli, recipe_file):
    code, out = cli("train", recipe_file, "--accelerate_config", "multi_node_ddp", "--machine_rank", "0")
    assert code == 2
    assert "error: --main_process_ip: a launch on 2 machines needs machine rank 0's address" in out
    assert "Traceback" not in out


def test_machine_flags_without_a_launch_config_are_one_line(cli, recipe_file):
    code, out = cli("train", recipe_file, "--machine_rank", "0")
    assert code == 2 and "--machine_rank only apply to a multi-process launch" in out
