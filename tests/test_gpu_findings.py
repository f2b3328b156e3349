"""The GPU-path findings of ../shared/notes/gpu-first-run-review.md, each tested at the torch boundary on the
CPU (fake device counts, monkeypatched ``torch.cuda``), named after its finding."""

from __future__ import annotations

import types
from pathlib import Path

import pytest
import torch

from grpolab import placement, rundir
from grpolab.errors import UserError
from grpolab.training import checkpoints, gpu_preflight

REPO = Path(__file__).resolve().parents[1]


def _cuda(monkeypatch, count: int):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_f1_one_process_with_several_gpus_is_refused_naming_ddp(monkeypatch):
    _cuda(monkeypatch, 4)
    with pytest.raises(UserError, match=r"--accelerate_config ddp --num_processes 4.*CUDA_VISIBLE_DEVICES=0"):
        gpu_preflight.refuse_data_parallel(torch, launched=False)


@pytest.mark.parametrize(("count", "launched"), [(1, False), (4, True)])
def test_f1_one_gpu_or_a_launched_rank_passes(monkeypatch, count, launched):
    _cuda(monkeypatch, count)
    assert gpu_preflight.refuse_data_parallel(torch, launched=launched) is None


def test_f1_train_preflight_refuses_before_any_weight_loads(monkeypatch):
    from grpolab.training import checks, recipes

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    train_args, grpo_config, model_config = recipes.parse_train_args(["--report_to", "none"])
    _cuda(monkeypatch, 2)
    with pytest.raises(UserError, match="2 GPUs are visible to one process"):
        checks.preflight(train_args, grpo_config, model_config)


@pytest.mark.parametrize("env", [{}, {"WANDB_API_KEY": "k"}, {"WANDB_MODE": "offline"}])
def test_f14_wandb_without_the_package_is_refused(monkeypatch, env):
    monkeypatch.setattr(gpu_preflight.importlib.util, "find_spec", lambda name: None)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(UserError, match=r"grpolab\[track\]"):
        gpu_preflight.require_wandb(["tensorboard", "wandb"])


def test_f14_wandb_without_a_key_is_refused_and_with_one_passes(monkeypatch, tmp_path):
    monkeypatch.setattr(gpu_preflight.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(gpu_preflight.Path, "home", lambda: tmp_path)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    with pytest.raises(UserError, match="no WANDB_API_KEY"):
        gpu_preflight.require_wandb(["wandb"])
    monkeypatch.setenv("WANDB_API_KEY", "secret")
    assert gpu_preflight.require_wandb(["wandb"]) is None
    assert gpu_preflight.require_wandb(["tensorboard"]) is None


def test_f16_only_rank_0_clears_an_unsaved_run(monkeypatch, tmp_path):
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    monkeypatch.setenv("RANK", "1")
    assert checkpoints.clear_unsaved_run(tmp_path) == []
    assert (tmp_path / "metrics.jsonl").is_file()
    monkeypatch.setenv("RANK", "0")
    assert checkpoints.clear_unsaved_run(tmp_path) == ["metrics.jsonl"]
    assert not (tmp_path / "metrics.jsonl").exists()


def test_f21_bf16_detection_reads_the_local_ranks_properties_without_a_context(monkeypatch):
    asked = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: pytest.fail("opened a context on GPU 0"))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda **kw: pytest.fail("calls current_device"))
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda index: asked.append(index) or types.SimpleNamespace(major=9))
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert placement.native_bf16() is True
    assert asked == [3]


class _LayerCache:
    """A layer's keys or values that live on another device: indexing checks the index is there too."""

    def __init__(self, tensor, device):
        self.tensor, self.device, self.index_devices = tensor, torch.device(device), []

    def __getitem__(self, key):
        self.index_devices.append(key[0].device)
        return self.tensor[: key[0].shape[0], key[1], key[2]]  # a meta index has no values to gather by


def test_f2_eval_decoder_indexes_each_layers_cache_on_its_device():
    from grpolab.generation import continuous_batching as cb

    rows, heads, length, dim = 3, 2, 5, 4
    on_cpu = torch.randn(rows, heads, length, dim)
    elsewhere = _LayerCache(torch.randn(rows, heads, length, dim), "meta")  # stands for cuda:1
    layers = [types.SimpleNamespace(keys=on_cpu, values=on_cpu), types.SimpleNamespace(keys=elsewhere,
                                                                                      values=elsewhere)]
    mask = torch.ones(rows, length, dtype=torch.long)
    batch = cb._Batch([10, 11, 12], types.SimpleNamespace(layers=layers), mask, torch.arange(rows),
                      torch.zeros(rows, 7), torch.zeros(rows, dtype=torch.long))
    kept = cb._drop(batch, [1])
    assert kept.rows == [10, 12]
    assert elsewhere.index_devices == [torch.device("meta"), torch.device("meta")]
    assert kept.cache.layers[1].keys.shape == (2, heads, length, dim)
    assert torch.equal(kept.cache.layers[0].keys, on_cpu[[0, 2]])


@pytest.mark.parametrize("recipe", ["gsm8k-qwen3-32b-unsloth", "gsm8k-qwen3-32b-a100"])
def test_f4_f8_qwen3_recipes_load_without_unsloth_and_without_thinking(recipe):
    from grpolab.training import recipes

    path = REPO / "configs" / f"{recipe}.yaml"  # this checkout's recipe, not the installed package's
    train_args, grpo_config, model_config = recipes.parse_train_args(["--config", str(path)])
    assert train_args.use_unsloth is False
    assert model_config.load_in_4bit is True
    assert grpo_config.chat_template_kwargs == {"enable_thinking": False}


def test_f4_missing_unsloth_names_the_flag_not_an_extra_that_cannot_resolve(monkeypatch):
    from grpolab.training import gpu_extras

    monkeypatch.setattr(gpu_extras.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match="pass --use_unsloth false") as error:
        gpu_extras.require_package("unsloth", "use_unsloth", "unsloth")
    assert "grpolab[unsloth]" not in str(error.value)


def _trl_vllm_range():
    import importlib.util
    import re

    text = Path(importlib.util.find_spec("trl.import_utils").origin).read_text()
    pattern = r'Version\("([\d.]+)"\) <= _vllm_base_version <= Version\("([\d.]+)"\)'
    return re.search(pattern, text).groups()


def test_f3_vllm_is_pinned_to_trls_supported_range_everywhere():
    import tomllib

    low, high = _trl_vllm_range()
    optional = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert optional["vllm"] == [f"vllm>={low},<={high}"]
    import yaml

    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    for name in ("grpolab-vllm", "vllm"):  # the trainer of server mode needs vllm's client too
        assert "vllm" in services[name]["build"]["args"]["EXTRAS"].split(","), name
    assert services["grpolab-vllm"]["image"] == services["vllm"]["image"]
    assert "'vllm' in os.environ['EXTRAS']" in (REPO / "Dockerfile").read_text()  # no torch 2.7.1 pin then


def _plan_of(recipe_args):
    from grpolab.training import plan, recipes

    train_args, grpo_config, model_config = recipes.parse_train_args(recipe_args)
    shape = plan.shape_of(model_config.model_name_or_path)
    return plan, shape, (train_args, grpo_config, model_config)


def test_f5_24gb_plan_matches_the_reviews_21_to_23_gib_and_warns(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    recipe = str(REPO / "configs" / "gsm8k-qwen3-32b-unsloth.yaml")
    plan, shape, args = _plan_of(["--config", recipe, "--use_unsloth", "false"])
    parts = plan.memory_parts(shape, *args)
    total = sum(value for key, value in parts.items() if key != "trainable") / 2**30
    assert 21 * 0.9 <= total <= 23 * 1.1  # the review's realistic peak, within 10%
    assert parts["weights"] / 2**30 == pytest.approx(17.9, abs=0.1)  # NF4 + constants, embeddings in bf16
    assert parts["kv_cache"] / 2**30 == pytest.approx(2.0, abs=0.05)  # 8 rows (2 x 4 steps) x 1024 tokens
    line = plan.memory_line(shape, *args)
    assert line.splitlines()[1].startswith("warning          the plan is 105% of the 22.4 GiB card")


def test_f5_a_plan_within_the_card_does_not_warn(monkeypatch):
    recipe = str(REPO / "configs" / "gsm8k-qwen3-32b-unsloth.yaml")
    plan, shape, args = _plan_of(["--config", recipe])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # an H200 here
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda index: types.SimpleNamespace(total_memory=141 * 2**30))
    assert "warning" not in plan.memory_line(shape, *args)


def test_f9_eval_loads_a_4bit_run_with_its_quantization(monkeypatch, tmp_path):
    import json

    from grpolab import models

    (tmp_path / "config.yaml").write_text("load_in_4bit: true\nuse_bnb_nested_quant: true\n")
    (tmp_path / "run_info.json").write_text(json.dumps({"base_model": "smollm2-135m-instruct"}))
    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "x", "r": 8}))
    loads = []

    def spy(source, dtype, **kwargs):
        loads.append((dtype, kwargs))
        raise UserError("stop at from_pretrained")

    monkeypatch.setattr(models, "check_adapter_weights", lambda adapter: None)
    monkeypatch.setattr(models, "resolve", lambda name: name)
    monkeypatch.setattr(models, "load_tokenizer", lambda *a, **k: None)
    monkeypatch.setattr(models, "load_causal_lm", spy)
    monkeypatch.setattr(placement, "detect", lambda: placement.Hardware("cuda", bf16=True))
    with pytest.raises(UserError, match="stop at from_pretrained"):
        models.load_for_inference(adapter=str(tmp_path))
    [(dtype, kwargs)] = loads
    quantization = kwargs["quantization_config"]
    assert (quantization.load_in_4bit, quantization.bnb_4bit_quant_type) == (True, "nf4")
    assert quantization.bnb_4bit_use_double_quant is True
    assert quantization.bnb_4bit_compute_dtype == torch.bfloat16 and dtype == "bfloat16"
    assert kwargs["device_map"] == {"": 0}  # one GPU, never split by "auto"


def test_f9_a_16bit_run_loads_without_quantization(tmp_path):
    (tmp_path / "config.yaml").write_text("load_in_4bit: false\n")
    recipe, _ = rundir.read_recipe(tmp_path)
    assert recipe == {"load_in_4bit": False} and rundir.quantization(recipe) is None
    assert rundir.read_recipe(None) == ({}, None)
    assert rundir.quantization({"load_in_8bit": True}) == {"load_in_8bit": True}


def _quantized_run(tmp_path):
    import json

    base = tmp_path / "tiny-bnb-4bit"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"quantization_config": {"load_in_4bit": True}}))
    parent = tmp_path / "tiny"
    parent.mkdir()
    (parent / "config.json").write_text(json.dumps({"model_type": "llama"}))
    run = tmp_path / "run"
    run.mkdir()
    (run / "run_info.json").write_text(json.dumps({"base_model": str(base)}))
    (run / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base), "r": 8}))
    return base, parent, run


def test_f7_merge_into_a_prequantized_base_is_refused_naming_the_parent(tmp_path):
    from grpolab import merge

    _, _, run = _quantized_run(tmp_path)
    with pytest.raises(UserError, match="pre-quantized .* pass --model with its full-precision parent"):
        merge.merge(run, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_f7_merge_into_the_declared_full_precision_parent_is_accepted(monkeypatch, tmp_path):
    from grpolab import merge, models

    _, parent, run = _quantized_run(tmp_path)
    seen = {}

    def spy(model, adapter, place=None, check_base=True):
        seen.update(model=model, check_base=check_base, dtype=place.dtype, quantization=place.quantization)
        raise UserError("stop at load")

    monkeypatch.setattr(models, "check_adapter_weights", lambda adapter: None)
    monkeypatch.setattr(models, "load_for_inference", spy)
    monkeypatch.setattr(merge, "check_memory", lambda *args: None)
    monkeypatch.setattr(placement, "detect", lambda: placement.Hardware("cpu"))
    with pytest.raises(UserError, match="stop at load"):
        merge.merge(run, tmp_path / "out", model=str(parent))
    assert seen == {"model": str(parent), "check_base": False, "dtype": "float32", "quantization": None}


def test_f7_another_full_precision_model_is_still_refused(tmp_path):
    import json

    from grpolab import merge

    _, parent, run = _quantized_run(tmp_path)
    for name in ("run_info.json", "adapter_config.json"):
        (run / name).write_text(json.dumps({"base_model": str(tmp_path / "other"),
                                            "base_model_name_or_path": str(tmp_path / "other")}))
    with pytest.raises(UserError, match="was trained on"):
        merge.merge(run, tmp_path / "out", model=str(parent))


def _model_on(device: str, layers: int, kv_heads: int, head_dim: int):
    config = types.SimpleNamespace(num_key_value_heads=kv_heads, num_attention_heads=64, head_dim=head_dim,
                                   hidden_size=5120, num_hidden_layers=layers)
    return types.SimpleNamespace(device=torch.device(device), dtype=torch.bfloat16, config=config)


def test_f6_eval_batch_is_sized_from_the_models_cache_and_free_memory(monkeypatch):
    from grpolab.generation import continuous_batching as cb

    model = _model_on("cuda:0", layers=64, kv_heads=8, head_dim=128)  # Qwen3-32B: 256 KiB per token
    free = 4 * 2**30  # what a 24 GB card has left beside the 4-bit 32B weights
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (free, 24 * 2**30))
    row = 2 * 64 * 8 * 128 * 2 * 1024
    assert cb.fitting_batch_size(model, 1024) == int(free * 0.5 // (2 * row)) == 4
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (100 * 2**30, 141 * 2**30))
    assert cb.fitting_batch_size(model, 1024) == 32
    assert cb.fitting_batch_size(_model_on("cpu", 64, 8, 128), 1024) == 128


def test_f6_vllm_engine_is_given_the_context_eval_needs():
    from grpolab.generation import vllm
    from grpolab.generation.settings import GenerationSettings

    assert vllm.max_model_len(GenerationSettings(max_new_tokens=512)) == 1024


@pytest.mark.parametrize(("stage", "peft", "expected"),
                         [("3", True, {"use_reentrant": True}), ("2", True, None), ("3", False, None)])
def test_f11_sft_under_zero3_with_lora_checkpoints_reentrantly(monkeypatch, stage, peft, expected):
    from grpolab.training import sft

    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", stage)
    config = types.SimpleNamespace(deepspeed=None, activation_checkpointing=True,
                                   activation_checkpointing_kwargs=None)
    sft.reentrant_checkpointing_under_zero3(config, types.SimpleNamespace(use_peft=peft))
    assert config.activation_checkpointing_kwargs == expected
