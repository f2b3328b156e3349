"""4-bit QLoRA for real on the CPU (bitsandbytes NF4 runs there): GRPO on a 4-bit base, eval with the run's
quantization (review F9), merge into the full-precision parent verified by logits (F7), ``model check``;
and the same from a pre-quantized bnb-4bit checkpoint of the embedded model (the shape of
``unsloth/Qwen3-32B-bnb-4bit``), where merge needs the full-precision parent named, never re-quantizes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from grpolab.cli import main

pytest.importorskip("bitsandbytes")
pytestmark = pytest.mark.slow


def _grpo_flags(model: Path, out: Path) -> list[str]:
    return [
        "--model_name_or_path", str(model), "--output_dir", str(out), "--max_steps", "2",
        "--per_device_train_batch_size", "4", "--num_generations", "4", "--max_completion_length", "8",
        "--num_train", "16", "--save_steps", "2", "--logging_steps", "1", "--torch_threads", "1",
        "--plot", "false", "--load_in_4bit", "true", "--use_peft", "true", "--report_to", "none",
    ]


def _nudge_adapter(run: Path) -> None:
    """Two GRPO steps with zero reward leave LoRA's B at its zero init; give B small values so that the
    merge has an adapter to lose (the check would otherwise pass on any merge)."""
    from safetensors.torch import load_file, save_file

    path = run / "adapter_model.safetensors"
    tensors = load_file(str(path))
    generator = torch.Generator().manual_seed(0)
    for name, tensor in tensors.items():
        if "lora_B" in name:
            tensors[name] = 0.02 * torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype)
    save_file(tensors, str(path))


def _four_bit_layers(model) -> int:
    import bitsandbytes as bnb

    return sum(isinstance(module, bnb.nn.Linear4bit) for module in model.modules())


def _adapter_effect(output: str) -> float:
    import re

    return float(re.search(r"changes the base model's logits by up to ([\d.e+-]+)", output).group(1))


def test_qlora_on_a_4bit_base_trains_evaluates_in_4bit_merges_into_the_parent(
    tmp_path, embedded_model_dir, capsys
):
    from grpolab import models

    run = tmp_path / "run"
    assert main(["train", *_grpo_flags(embedded_model_dir, run)]) == 0
    assert (run / "adapter_model.safetensors").is_file()
    _nudge_adapter(run)
    network, _, _ = models.load_for_inference(adapter=str(run))  # eval's load: the run's 4-bit (F9)
    assert _four_bit_layers(network) == 30 * 7
    del network
    assert main(["eval", "--adapter", str(run), "--num", "2", "--max_new_tokens", "4"]) == 0
    capsys.readouterr()
    merged = tmp_path / "merged"
    assert main(["merge", "--adapter", str(run), "--out", str(merged)]) == 0  # into the float32 parent
    assert _adapter_effect(capsys.readouterr().out) > 0.01
    assert main(["model", "check", "--model", str(merged)]) == 0


def test_qlora_from_a_prequantized_checkpoint_merges_into_the_named_parent(
    tmp_path, embedded_model_dir, capsys
):
    import json

    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    prequantized = tmp_path / "smollm2-bnb-4bit"
    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                      bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.float32)
    four_bit = AutoModelForCausalLM.from_pretrained(embedded_model_dir, quantization_config=quantization)
    four_bit.save_pretrained(prequantized)
    AutoTokenizer.from_pretrained(embedded_model_dir).save_pretrained(prequantized)
    del four_bit
    config = json.loads((prequantized / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "bitsandbytes"

    run = tmp_path / "run"
    assert main(["train", *_grpo_flags(prequantized, run)]) == 0
    _nudge_adapter(run)
    capsys.readouterr()
    assert main(["merge", "--adapter", str(run), "--out", str(tmp_path / "requantized")]) == 2
    refusal = capsys.readouterr().err.strip()
    assert "--model" in refusal and len(refusal.splitlines()) == 1
    assert not (tmp_path / "requantized").exists()

    parent = tmp_path / "into-parent"
    into_parent = ["merge", "--adapter", str(run), "--model", str(embedded_model_dir), "--out", str(parent)]
    assert main(into_parent) == 0
    assert _adapter_effect(capsys.readouterr().out) > 0.01
    assert "quantization_config" not in json.loads((parent / "config.json").read_text())
    with safe_open(str(parent / "model.safetensors"), "pt") as weights:
        assert weights.get_tensor("model.layers.0.self_attn.q_proj.weight").dtype == torch.float32
    assert main(["model", "check", "--model", str(parent)]) == 0
