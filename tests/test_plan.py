"""The dry-run plan's memory estimate: what it counts as trainable."""

from __future__ import annotations

import json
from types import SimpleNamespace

from grpolab.training import plan

# SmolLM2-135M's shape (its config.json): 30 layers, hidden 576, MLP 1536, 3 KV heads x 64.
SHAPE = plan.Shape(parameters=134.5e6, hidden=576, layers=30, intermediate=1536, kv_heads_dim=192,
                   vocab=49152)


def _args(init_adapter=None, use_peft=False):
    train_args = SimpleNamespace(init_adapter=init_adapter, max_seq_length=None, use_unsloth=False,
                                 recipe=None)
    grpo_config = SimpleNamespace(per_device_train_batch_size=8, max_completion_length=64, bf16=False,
                                  activation_checkpointing=False, optim="adamw_torch", beta=0.0)
    model_config = SimpleNamespace(use_peft=use_peft, lora_r=16, lora_target_modules="all-linear",
                                   load_in_4bit=False, load_in_8bit=False, dtype="float32")
    return train_args, grpo_config, model_config


def test_lora_parameters_of_all_linear_rank_16():
    # per layer: q, o 2 x 16 x 1152; k, v 2 x 16 x 768; gate, up, down 3 x 16 x 2112 = 162,816
    assert plan.lora_parameters(SHAPE, 16, "all-linear") == 30 * 162_816


def test_a_continued_adapter_counts_its_lora_parameters_not_the_whole_model(tmp_path):
    adapter = {"r": 8, "target_modules": ["q_proj", "v_proj"]}
    (tmp_path / "adapter_config.json").write_text(json.dumps(adapter))
    line = plan.memory_line(SHAPE, *_args(init_adapter=str(tmp_path)))
    assert f"trainable {30 * 8 * (1152 + 768) / 1e6:.1f}M params" in line  # 0.5M, not 134.5M
    fresh = plan.memory_line(SHAPE, *_args(use_peft=True))
    assert "trainable 4.9M params" in fresh
    full = plan.memory_line(SHAPE, *_args())
    assert "trainable 134.5M params" in full


def test_an_adapter_without_a_readable_config_falls_back_to_the_recipe_rank(tmp_path):
    line = plan.memory_line(SHAPE, *_args(init_adapter=str(tmp_path)))
    assert "trainable 4.9M params" in line
