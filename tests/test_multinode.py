"""Several machines: the flags reach accelerate launch, --dry_run prints the world, and every mistake is
one line before anything launches (issue 30)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from grpolab.cli import main
from grpolab.training import distributed, multinode
from grpolab.training.args import TrainArgs

DEFAULT = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_issues_sudoku_7b_zero3_two_by_sixteen_dry_run(workdir, capsys):
    assert main(["data", "sudoku", "--out", "data/sudoku.jsonl"]) == 0
    capsys.readouterr()
    argv = ["train", "--config", "sudoku-qwen2.5-7b", "--accelerate_config", "zero3", "--num_machines", "2",
            "--num_processes", "16", "--machine_rank", "0", "--main_process_ip", "127.0.0.2", "--dry_run"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "world            2 machine(s) x 8 process(es) = 16 process(es); this is machine rank 0, head " \
           "127.0.0.2:29500" in lines
    assert ("world batch      6/device x 4 accumulation x 16 process(es) = 384 completions per optimiser "
            "step; 384 / 6 generations = 64 prompts per generation batch") in lines
    assert ("batch            6/device x 4 accumulation x 16 process(es) = 384 completions per optimiser "
            "step") in lines


def test_recipe_keys_set_the_world_and_flags_override_them(workdir, capsys):
    (workdir / "two.yaml").write_text(DEFAULT.read_text() + "\nnum_machines: 2\nmachine_rank: 1\n"
                                      "main_process_ip: 127.0.0.1\n"
                                      "main_process_port: 29611\naccelerate_config: cpu2\n"
                                      "per_device_train_batch_size: 4\nnum_generations: 4\n")
    assert main(["train", "--config", "two.yaml", "--dry_run", "--num_processes", "4"]) == 0
    out = capsys.readouterr().out
    assert "world            2 machine(s) x 2 process(es) = 4 process(es); this is machine rank 1, head " \
           "127.0.0.1:29611" in out
    assert "4/device x 1 accumulation x 4 process(es) = 16 completions" in out


def _taken_port() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock


CASES = [
    (["--num_machines", "2", "--machine_rank", "2", "--main_process_ip", "127.0.0.1"],
     "--machine_rank 2 is out of range for --num_machines 2: give 0 .. 1"),
    (["--num_machines", "2", "--machine_rank", "-1", "--main_process_ip", "127.0.0.1"], "is out of range"),
    (["--num_machines", "0"], "--num_machines 0: give 1 or more machines"),
    (["--num_machines", "2", "--machine_rank", "1"], "--num_machines 2 needs --main_process_ip"),
    (["--num_machines", "2", "--main_process_ip", "not an address"],
     "--main_process_ip not an address is neither an IP address nor a host name"),
    (["--num_machines", "2", "--main_process_ip", "192.0.2.7"],
     "--main_process_ip 192.0.2.7 is not an address of this machine"),
    (["--num_machines", "2", "--main_process_ip", "127.0.0.1", "--main_process_port", "70000"],
     "--main_process_port 70000 is not a port"),
    (["--num_machines", "2", "--main_process_ip", "127.0.0.1", "--num_processes", "3"],
     "--num_processes 3 (all machines together, as accelerate counts) does not split evenly"),
]


@pytest.mark.parametrize(("argv", "message"), CASES, ids=[" ".join(case[0]) for case in CASES])
def test_a_bad_world_is_one_line_before_launch(workdir, capsys, argv, message):
    assert main(["train", "--accelerate_config", "cpu2", "--dry_run", *argv]) == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert len(captured.err.strip().splitlines()) == 1
    assert captured.out == ""


def test_several_machines_need_an_accelerate_config(workdir, capsys):
    assert main(["sft", "--dry_run", "--num_machines", "2", "--main_process_ip", "127.0.0.1"]) == 2
    assert "--num_machines 2 needs --accelerate_config" in capsys.readouterr().err


def test_the_head_nodes_port_must_be_free_but_other_ranks_do_not_bind(workdir, capsys):
    taken = _taken_port()
    port = str(taken.getsockname()[1])
    try:
        head = ["--num_machines", "2", "--main_process_ip", "127.0.0.1", "--main_process_port", port]
        assert main(["train", "--accelerate_config", "cpu2", "--dry_run", *head]) == 2
        assert f"--main_process_port {port} is already taken on 127.0.0.1" in capsys.readouterr().err
        # rank 1 does not bind the head's port (no probing of other hosts), so the same world passes there
        assert main(["train", "--accelerate_config", "cpu2", "--dry_run", *head, "--machine_rank", "1"]) == 0
    finally:
        taken.close()


def test_a_real_run_checks_the_world_before_it_launches(workdir, capsys, monkeypatch):
    launched = []
    monkeypatch.setattr("subprocess.call", lambda *a, **k: launched.append(a) or 0)
    monkeypatch.setattr(distributed, "check_backend", lambda name: None)
    assert main(["train", "--accelerate_config", "cpu2", "--num_machines", "2", "--machine_rank", "5",
                 "--main_process_ip", "127.0.0.1"]) == 2
    assert "--machine_rank 5 is out of range" in capsys.readouterr().err
    assert launched == []


def test_launch_line_carries_the_machine_flags_and_the_inner_command_drops_them():
    args = TrainArgs(accelerate_config="cpu2", num_processes=4, num_machines=2, machine_rank=1,
                     main_process_ip="10.0.0.1", main_process_port=29600)
    argv = ["--accelerate_config", "cpu2", "--num_processes", "4", "--num_machines=2", "--machine_rank", "1",
            "--main_process_ip", "10.0.0.1", "--main_process_port", "29600", "--max_steps", "2"]
    command = distributed.launch_command(argv, "cpu2", 4, "train", multinode.launch_flags(args))
    at = command.index("--num_processes")
    assert command[at:] == ["--num_processes", "4", "--num_machines", "2", "--machine_rank", "1",
                            "--main_process_ip", "10.0.0.1", "--main_process_port", "29600",
                            "-m", "grpolab", "train", "--max_steps", "2"]


def test_one_machine_adds_no_flags_and_needs_no_address():
    assert multinode.launch_flags(TrainArgs(accelerate_config="cpu2")) == []
    world = multinode.world_of(TrainArgs(accelerate_config="cpu2"))
    assert (world.machines, world.processes, world.rank, world.ip, world.port) == (1, 2, 0, None, 29500)


def test_a_generation_batch_of_the_world_must_hold_whole_groups():
    from types import SimpleNamespace

    world = multinode.World(machines=3, processes=3, rank=0, ip="127.0.0.1", port=29500)
    config = SimpleNamespace(per_device_train_batch_size=2, gradient_accumulation_steps=1, num_generations=4,
                             steps_per_generation=None)
    with pytest.raises(multinode.UserError, match="= 6 completions, which is not a multiple of num_gen"):
        multinode.check_batch(world, config)
    lines = multinode.check_batch(multinode.World(3, 6, 0, "127.0.0.1", 29500), config)
    assert lines[1].endswith("12 / 4 generations = 3 prompts per generation batch")


def test_every_node_resumes_from_the_same_step_or_all_refuse_in_one_line():
    from grpolab.training.checkpoints import agree_on_resume

    agree_on_resume("/run/checkpoint-2", gather=lambda name: [name, name])  # the same step: goes on
    agree_on_resume(None, gather=lambda name: [name, name])
    with pytest.raises(multinode.UserError, match="rank 0 resumes from checkpoint-2 but rank 1 from a fresh "
                                                  "start: copy rank 0's checkpoint to every node"):
        agree_on_resume("/run/checkpoint-2", gather=lambda name: [name, "a fresh start"])
    with pytest.raises(multinode.UserError, match="rank 2 from checkpoint-1"):
        agree_on_resume("/a/checkpoint-2", gather=lambda name: [name, name, "checkpoint-1"])
    agree_on_resume("/run/checkpoint-2")  # one process, no process group: nothing to agree on


def test_save_on_each_node_is_a_flag_and_a_recipe_key_that_reaches_the_trainer(workdir):
    from grpolab.training.recipes import parse_train_args

    _, config, _ = parse_train_args(["--save_on_each_node", "true", "--max_steps", "1"])
    assert config.save_on_each_node is True
    assert config.should_save  # one process: it is the node's first, so it writes run info and tokenizer
    _, config, _ = parse_train_args(["--max_steps", "1"])
    assert config.save_on_each_node is False
