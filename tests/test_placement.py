"""The placement decision (device, device_map, dtype, quantisation) and that every command loads with it.

No GPU is needed: the hardware is faked at the torch boundary (``torch.cuda.*``) for ``detect``, and as a
``Hardware`` value for the commands, whose loads are caught at ``from_pretrained``.
"""

from __future__ import annotations

import json
import sys
import types

import pytest
import torch

from grpolab import placement
from grpolab.cli import main
from grpolab.errors import UserError
from grpolab.placement import Hardware, decide
from grpolab.training import grpo as training
from grpolab.training import model as training_model
from grpolab.training import recipes
from grpolab.training import run as training_run

CUDA = Hardware("cuda", bf16=True)
CUDA_NO_BF16 = Hardware("cuda", bf16=False)  # e.g. T4, V100
CUDA_RANK_3 = Hardware("cuda", bf16=True, local_rank=3, world_size=4)
DEEPSPEED_RANK_1 = Hardware("cuda", bf16=True, local_rank=1, world_size=2, deepspeed=True)
NPU_RANK_1 = Hardware("npu", bf16=True, local_rank=1, world_size=2)
NPU = Hardware("npu", bf16=True)
MPS = Hardware("mps")
CPU = Hardware("cpu")


@pytest.mark.parametrize(
    ("hardware", "purpose", "request_", "device", "device_map", "dtype"),
    [
        # inference (eval, chat, model check): "auto" spreads a big model over every GPU of a single process
        (CUDA, "inference", {}, "cuda:0", "auto", "bfloat16"),
        (CUDA_NO_BF16, "inference", {}, "cuda:0", "auto", "float16"),
        (CUDA_RANK_3, "inference", {}, "cuda:3", {"": 3}, "bfloat16"),
        (CUDA, "inference", {"quantization": "4bit"}, "cuda:0", {"": 0}, "bfloat16"),
        (NPU, "inference", {}, "npu:0", "auto", "bfloat16"),
        (MPS, "inference", {}, "mps", {"": "mps"}, "float16"),
        (CPU, "inference", {}, "cpu", None, "float32"),
        (CPU, "inference", {"dtype": "bf16"}, "cpu", None, "bfloat16"),
        (CUDA, "inference", {"dtype": "float32"}, "cuda:0", "auto", "float32"),
        (CUDA, "inference", {"device": "cpu"}, "cpu", None, "float32"),
        # training (train, sft): the whole model on the local rank's device; DeepSpeed places it itself
        (CUDA, "train", {}, "cuda:0", {"": 0}, "bfloat16"),
        (CUDA_NO_BF16, "train", {}, "cuda:0", {"": 0}, "float16"),
        (CUDA_NO_BF16, "train", {"full_finetune": True}, "cuda:0", {"": 0}, "float32"),
        (CUDA_RANK_3, "train", {}, "cuda:3", {"": 3}, "bfloat16"),
        (CUDA_RANK_3, "train", {"quantization": "4bit"}, "cuda:3", {"": 3}, "bfloat16"),
        (CUDA_RANK_3, "train", {"quantization": "8bit"}, "cuda:3", {"": 3}, "bfloat16"),
        (DEEPSPEED_RANK_1, "train", {}, "cuda:1", None, "bfloat16"),
        (NPU_RANK_1, "train", {}, "npu:1", {"": "npu:1"}, "bfloat16"),
        (MPS, "train", {}, "mps", None, "float32"),
        (CPU, "train", {}, "cpu", None, "float32"),
        # merge: the base checkpoint's own dtype, on the GPU when there is one
        (CUDA, "merge", {"checkpoint_dtype": "bfloat16"}, "cuda:0", "auto", "bfloat16"),
        (CUDA, "merge", {"checkpoint_dtype": "float32"}, "cuda:0", "auto", "float32"),
        (CUDA, "merge", {"checkpoint_dtype": None}, "cuda:0", "auto", "float32"),
        (CPU, "merge", {"checkpoint_dtype": "bfloat16"}, "cpu", None, "bfloat16"),
        (
            CUDA,
            "merge",
            {"checkpoint_dtype": "bfloat16", "dtype": "float32", "device": "cpu"},
            "cpu",
            None,
            "float32",
        ),
    ],
)
def test_placement_table(hardware, purpose, request_, device, device_map, dtype):
    place = decide(hardware, purpose, **request_)
    assert (place.device, place.device_map, place.dtype) == (device, device_map, dtype)
    assert place.quantization == request_.get("quantization")


@pytest.mark.parametrize(
    ("hardware", "request_", "message"),
    [
        (CPU, {"quantization": "8bit"}, "load_in_8bit needs a CUDA GPU"),  # 4-bit NF4 runs on the CPU
        (NPU, {"quantization": "8bit"}, "load_in_8bit needs a CUDA GPU"),
        (CUDA, {"device": "cuda", "quantization": "4bit", "dtype": "int8"}, "unknown dtype 'int8'"),
        (CPU, {"device": "cuda"}, "--device cuda: there is no cuda device here (found: cpu)"),
        (CUDA, {"device": "tpu"}, "--device tpu is not one of auto, cpu, cuda, npu, mps"),
    ],
)
def test_impossible_requests_are_one_line_errors(hardware, request_, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        decide(hardware, "train", **request_)


@pytest.mark.parametrize(
    ("cuda", "native_bf16", "env", "expected"),
    [
        (True, True, {}, Hardware("cuda", True, 0, 1, False)),
        (True, False, {}, Hardware("cuda", False, 0, 1, False)),
        (True, True, {"LOCAL_RANK": "3", "WORLD_SIZE": "4"}, Hardware("cuda", True, 3, 4, False)),
        (
            True,
            True,
            {"LOCAL_RANK": "1", "WORLD_SIZE": "2", "ACCELERATE_USE_DEEPSPEED": "true"},
            Hardware("cuda", True, 1, 2, True),
        ),
        (False, False, {}, Hardware("cpu", False, 0, 1, False)),
    ],
)
def test_detect_reads_torch_and_the_launch_environment(monkeypatch, cuda, native_bf16, env, expected):
    asked = []

    def properties(index):
        asked.append(index)
        return types.SimpleNamespace(major=8 if native_bf16 else 7)  # Ampere or newer computes in bf16

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "get_device_properties", properties)
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(placement, "npu_available", lambda: False)
    for name in ("LOCAL_RANK", "WORLD_SIZE", "ACCELERATE_USE_DEEPSPEED"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert placement.detect() == expected
    assert asked == ([int(env.get("LOCAL_RANK", 0))] if cuda else [])


def test_detect_finds_an_npu_through_torch_npu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(placement, "npu_available", lambda: True)
    monkeypatch.setattr(torch, "npu", types.SimpleNamespace(is_bf16_supported=lambda: True), raising=False)
    assert placement.detect().accelerator == "npu" and placement.native_bf16()


def test_device_defaults_follow_the_hardware(monkeypatch):
    monkeypatch.setattr(placement, "detect", lambda: CUDA_NO_BF16)
    assert recipes.device_defaults() == {"dtype": "auto", "report_to": ["tensorboard"], "bf16": False}
    monkeypatch.setattr(placement, "detect", lambda: CUDA)
    assert recipes.device_defaults() == {"dtype": "auto", "report_to": ["tensorboard"]}
    monkeypatch.setattr(placement, "detect", lambda: CPU)
    assert recipes.device_defaults() == {
        "dtype": "auto",
        "report_to": ["tensorboard"],
        "bf16": False,
        "use_cpu": True,
    }


# ---- every command loads with that placement: caught at the from_pretrained boundary ----------------------


class Loaded(Exception):
    """Raised by the spy instead of loading weights; carries the keyword arguments it was called with."""


@pytest.fixture
def spy_load(monkeypatch):
    from transformers import modeling_utils

    calls = []

    def from_pretrained(cls, source, *args, **kwargs):
        calls.append({"source": str(source), **kwargs})
        raise Loaded(kwargs)

    monkeypatch.setattr(modeling_utils.PreTrainedModel, "from_pretrained", classmethod(from_pretrained))
    return calls


def _on(monkeypatch, hardware: Hardware) -> None:
    monkeypatch.setattr(placement, "detect", lambda: hardware)


@pytest.mark.parametrize(
    ("hardware", "device_map", "dtype"),
    [
        (CUDA, "auto", "bfloat16"),
        (CUDA_NO_BF16, "auto", "float16"),
        (CUDA_RANK_3, {"": 3}, "bfloat16"),
        (CPU, None, "float32"),
    ],
)
@pytest.mark.parametrize("command", ["eval", "chat", "model"])
def test_inference_commands_load_with_the_placement(
    command, hardware, device_map, dtype, tiny_model_dir, tmp_path, monkeypatch, spy_load
):
    argv = {
        "eval": ["eval", "--model", str(tiny_model_dir), "--num", "2", "--out", str(tmp_path / "e")],
        "chat": ["chat", "--model", str(tiny_model_dir)],
        "model": ["model", "check", "--model", str(tiny_model_dir)],
    }[command]
    _on(monkeypatch, hardware)
    with pytest.raises(Loaded):
        main(argv)
    assert [(c["device_map"], c["dtype"]) for c in spy_load] == [(device_map, dtype)]
    assert spy_load[0]["trust_remote_code"] is False


def test_model_check_takes_device_and_dtype_flags(tiny_model_dir, monkeypatch, spy_load):
    _on(monkeypatch, CUDA)
    with pytest.raises(Loaded):
        main(["model", "check", "--model", str(tiny_model_dir), "--device", "cpu", "--dtype", "bf16"])
    assert (spy_load[0]["device_map"], spy_load[0]["dtype"]) == (None, "bfloat16")


@pytest.mark.parametrize(
    ("hardware", "request_flags", "device_map", "dtype"),
    [
        (CUDA, [], {"": 0}, torch.bfloat16),
        (CUDA_NO_BF16, [], {"": 0}, torch.float16),
        (CUDA_RANK_3, [], {"": 3}, torch.bfloat16),
        (CUDA_RANK_3, ["--dtype", "float32"], {"": 3}, torch.float32),
        (CPU, [], None, torch.float32),
    ],
)
@pytest.mark.parametrize("command", ["train", "sft"])
def test_training_commands_hand_trl_the_placement(
    command, hardware, request_flags, device_map, dtype, tiny_model_dir, tmp_path, monkeypatch, spy_load
):
    from trl import SFTConfig

    from grpolab.training import sft

    flags = [
        "--model_name_or_path",
        str(tiny_model_dir),
        "--output_dir",
        str(tmp_path / "run"),
        "--max_steps",
        "1",
        "--num_train",
        "8",
        "--attn_implementation",
        "eager",
        "--model_revision",
        "v1",
        "--dtype",
        "auto",
        *request_flags,
    ]
    if command == "train":
        parsed = recipes.parse_train_args(flags)
    else:
        parsed = recipes.parse_train_args(flags, SFTConfig, "sft-sudoku-smollm2.yaml", "sft")
    _on(monkeypatch, hardware)
    with pytest.raises(Loaded):
        training.train(*parsed) if command == "train" else sft.sft(*parsed)
    (call,) = spy_load  # TRL loads the policy itself from model_init_kwargs (trl/scripts/grpo.py)
    assert call["source"] == str(tiny_model_dir)
    assert (call["device_map"], call["dtype"]) == (device_map, dtype)
    assert (call["attn_implementation"], call["revision"], call["trust_remote_code"]) == (
        "eager",
        "v1",
        False,
    )


def test_continuing_an_adapter_loads_its_base_with_the_same_placement(tiny_model_dir, tmp_path, monkeypatch):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    run = tmp_path / "sft-run"
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(r=2)).save_pretrained(run)
    (run / "grpolab_run.json").write_text(json.dumps({"base_model": str(tiny_model_dir), "task": "arith"}))
    parsed = recipes.parse_train_args(
        [
            "--model_name_or_path",
            str(tiny_model_dir),
            "--init_adapter",
            str(run),
            "--dtype",
            "auto",
            "--attn_implementation",
            "eager",
            "--output_dir",
            str(tmp_path / "out"),
        ]
    )
    _on(monkeypatch, CUDA_RANK_3)
    calls = []

    def load_causal_lm(source, **kwargs):
        calls.append(kwargs)
        raise Loaded(kwargs)

    monkeypatch.setattr(training_model.models, "load_causal_lm", load_causal_lm)
    with pytest.raises(Loaded):
        training_model.model_arguments(*parsed)
    assert (calls[0]["device_map"], calls[0]["dtype"], calls[0]["attn_implementation"]) == (
        {"": 3},
        "bfloat16",
        "eager",
    )
    assert calls[0]["quantization_config"] is None and parsed[1].model_init_kwargs is None


def test_four_bit_training_goes_on_the_local_ranks_gpu_with_trls_quantization_config(
    tiny_model_dir, tmp_path, monkeypatch
):
    parsed = recipes.parse_train_args(
        [
            "--model_name_or_path",
            str(tiny_model_dir),
            "--load_in_4bit",
            "true",
            "--use_peft",
            "true",
            "--dtype",
            "auto",
            "--output_dir",
            str(tmp_path),
        ]
    )
    _on(monkeypatch, CUDA_RANK_3)
    arguments = training_model.model_arguments(*parsed)
    train_args, grpo_config, model_config = parsed
    assert grpo_config.model_init_kwargs["device_map"] == {"": 3}
    quantization = arguments["quantization_config"]
    assert quantization.load_in_4bit and quantization.bnb_4bit_compute_dtype == torch.bfloat16
    assert quantization.bnb_4bit_quant_storage == torch.bfloat16
    assert arguments["peft_config"].r == model_config.lora_r
    # The saved recipe keeps the recipe's own model_init_kwargs, not this machine's placement.
    training_run.save_run_info(tmp_path, *parsed)
    import yaml

    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["model_init_kwargs"] is None


def test_a_recipes_own_model_init_kwargs_win(tiny_model_dir, tmp_path, monkeypatch):
    parsed = recipes.parse_train_args(
        [
            "--model_name_or_path",
            str(tiny_model_dir),
            "--output_dir",
            str(tmp_path),
            "--dtype",
            "auto",
            "--model_init_kwargs",
            '{"device_map": "auto", "use_cache": false}',
        ]
    )
    _on(monkeypatch, CUDA)
    training_model.model_arguments(*parsed)
    assert parsed[1].model_init_kwargs == {
        "revision": "main",
        "trust_remote_code": False,
        "attn_implementation": None,
        "dtype": "bfloat16",
        "device_map": "auto",
        "use_cache": False,
    }


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_attn_implementation_reaches_the_embedded_models_config(attention, tmp_path):
    """A real load of the embedded model through TRL."""
    parsed = recipes.parse_train_args(
        [
            "--attn_implementation",
            attention,
            "--output_dir",
            str(tmp_path),
            "--num_train",
            "8",
            "--plot",
            "false",
        ]
    )
    trainer = training.build_trainer(*parsed)
    assert trainer.model.config._attn_implementation == attention


def test_inference_loads_a_runs_base_with_the_runs_attention(tmp_path, tiny_model_dir, monkeypatch, spy_load):
    from grpolab import models

    (tmp_path / "grpolab_run.json").write_text(
        json.dumps({"base_model": str(tiny_model_dir), "task": "arith"})
    )
    (tmp_path / "config.yaml").write_text("attn_implementation: eager\nmodel_revision: v2\n")
    _on(monkeypatch, CPU)
    with pytest.raises(Loaded):
        models.load_for_inference(adapter=str(tmp_path))
    # AutoModelForCausalLM hands the attention choice over inside the config it builds.
    assert (spy_load[0]["config"]._attn_implementation, spy_load[0]["revision"]) == ("eager", "v2")


# ---- Unsloth: the recipe's context, seed and checkpointing; imported before TRL -------------------------


@pytest.fixture
def fake_unsloth(monkeypatch):
    """An ``unsloth`` module whose FastLanguageModel records what it was asked for."""
    import importlib.machinery

    calls = {}

    class FastLanguageModel:
        @staticmethod
        def from_pretrained(**kwargs):
            calls["from_pretrained"] = kwargs
            return "model", "tokenizer"

        @staticmethod
        def get_peft_model(model, **kwargs):
            calls["get_peft_model"] = kwargs
            return model

    module = types.ModuleType("unsloth")
    module.__spec__ = importlib.machinery.ModuleSpec("unsloth", None)
    module.FastLanguageModel = FastLanguageModel
    monkeypatch.setitem(sys.modules, "unsloth", module)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("UNSLOTH_RETURN_LOGITS", "0")
    return calls


@pytest.mark.parametrize(
    ("recipe", "flags", "max_seq_length", "checkpointing"),
    [
        ("gsm8k-qwen3-32b-a100", [], 8192, "unsloth"),  # the reference's 8K context, 1,024-token completions
        (
            "gsm8k-qwen3-32b-unsloth",
            [],
            512 + 512,
            "unsloth",
        ),  # default: prompt budget + max_completion_length
        (
            "gsm8k-qwen3-32b-unsloth",
            ["--max_seq_length", "3000", "--activation_checkpointing", "false"],
            3000,
            False,
        ),
    ],
)
def test_unsloth_gets_the_recipes_context_seed_and_checkpointing(
    recipe, flags, max_seq_length, checkpointing, tiny_model_dir, tmp_path, fake_unsloth, monkeypatch
):
    import os

    _on(monkeypatch, CUDA)
    parsed = recipes.parse_train_args(
        [
            "--config",
            recipe,
            "--use_unsloth",  # the recipes ship without Unsloth (it does not install beside TRL 1.16)
            "true",
            "--model_name_or_path",
            str(tiny_model_dir),
            "--output_dir",
            str(tmp_path),
            "--seed",
            "7",
            "--use_cpu",
            "true",
            *flags,
        ]
    )
    arguments = training_model.model_arguments(*parsed)
    assert arguments["model"] == "model" and "peft_config" not in arguments
    assert fake_unsloth["from_pretrained"]["max_seq_length"] == max_seq_length
    assert fake_unsloth["get_peft_model"]["random_state"] == 7
    assert fake_unsloth["get_peft_model"]["use_gradient_checkpointing"] == checkpointing
    assert os.environ["UNSLOTH_RETURN_LOGITS"] == "1"


def test_a100_recipe_means_an_8k_context_with_1024_token_completions(capsys):
    train_args, grpo_config, _ = recipes.parse_train_args(["--config", "gsm8k-qwen3-32b-a100"])
    assert (train_args.max_seq_length, grpo_config.max_completion_length) == (8192, 1024)
    assert main(["train", "--config", "gsm8k-qwen3-32b-a100", "--dry_run"]) == 0
    assert "max_seq_length 8192 tokens" in capsys.readouterr().out


def test_max_seq_length_must_leave_room_for_the_prompt():
    with pytest.raises(UserError, match=r"max_seq_length \(512\) must exceed max_completion_length \(1024\)"):
        recipes.parse_train_args(["--config", "gsm8k-qwen3-32b-a100", "--max_seq_length", "512"])


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--config", "gsm8k-qwen3-32b-unsloth", "--use_unsloth", "true"], True),
        (["--config", "gsm8k-qwen3-32b-unsloth", "--use_unsloth", "true", "--dry_run"], False),
        (["--config", "gsm8k-qwen3-32b-unsloth", "--use_unsloth", "false"], False),
        (["--config", "gsm8k-qwen3-32b-unsloth", "--use_unsloth=false"], False),
        (["--use_unsloth"], True),
        (["--use_unsloth", "--max_steps", "1"], True),
        ([], False),
    ],
)
def test_wants_unsloth_reads_the_recipe_and_flags_without_trl(argv, expected):
    assert recipes.wants_unsloth(argv) is expected


def test_train_imports_unsloth_before_the_parser_imports_trl(monkeypatch):
    from grpolab.training import gpu_extras as accel

    order = []
    monkeypatch.setattr(accel, "import_unsloth", lambda: order.append("unsloth"))

    def parse(argv):
        order.append("trl")
        raise UserError("stop here")

    monkeypatch.setattr(recipes, "parse_train_args", parse)
    assert main(["train", "--config", "gsm8k-qwen3-32b-unsloth", "--use_unsloth", "true"]) == 2
    assert order == ["unsloth", "trl"]


# ---- the recipe's env: applied as TRL's parser does ----------------------------------------------------


def test_recipe_env_is_applied(tmp_path, monkeypatch):
    import os

    monkeypatch.setenv("GRPOLAB_TEST_ENV", "before")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("env:\n  GRPOLAB_TEST_ENV: 42\nmax_steps: 1\n")
    recipes.parse_train_args(["--config", str(recipe)])
    assert os.environ["GRPOLAB_TEST_ENV"] == "42"


def test_recipe_env_must_be_a_mapping(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("env: [A, B]\n")
    with pytest.raises(UserError, match="'env' must be a mapping of NAME: value"):
        recipes.parse_train_args(["--config", str(recipe)])
