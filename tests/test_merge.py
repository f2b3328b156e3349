"""``grpolab merge`` on a tiny random Llama with a LoRA adapter whose B weights are not zero."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from grpolab import cli, rundir
from grpolab import merge as merging

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
OTHER_CHATS = [[{"role": "user", "content": "Name three colours."}],
               [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 2?"}]]


def _peft_model(base_dir: Path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    # init_lora_weights=False draws B at random too, so the adapter changes the output from the start.
    config = LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights=False)
    return get_peft_model(base, config).eval()


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory, tiny_model_dir) -> Path:
    """A training-run-like directory: the adapter and a grpolab_run.json naming the tiny base model."""
    directory = tmp_path_factory.mktemp("run")
    _peft_model(tiny_model_dir).save_pretrained(directory)
    (directory / "grpolab_run.json").write_text(
        json.dumps({"base_model": str(tiny_model_dir), "task": "arith"})
    )
    return directory


def _logits(model, tokenizer, chats=OTHER_CHATS):
    from grpolab.generation.hf import encode_chats

    batch = encode_chats(tokenizer, chats)
    return merging.probe_logits(model, batch), batch["attention_mask"]


def _reference(adapter_dir: Path, tiny_model_dir: Path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    return PeftModel.from_pretrained(base, str(adapter_dir)).eval()


def test_merge_saves_a_plain_checkpoint_with_the_adapters_logits(
    adapter_dir, tiny_model_dir, tokenizer, tmp_path
):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "merged"
    report = merging.merge(adapter_dir, out)
    assert report.ok and report.out == out and report.atol == 1e-3
    assert report.max_abs_diff < 1e-5 and report.adapter_effect > 1e-2  # the check is not vacuous
    files = {path.name for path in out.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        rundir.MERGE_INFO,
    } <= files
    assert not any("adapter" in name for name in files)  # nothing that would make transformers load PEFT
    assert not list(tmp_path.glob(".merged.*"))  # the staging directory is gone

    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert not any("lora" in name for name, _ in merged.named_parameters())
    expected, mask = _logits(_reference(adapter_dir, tiny_model_dir), tokenizer)
    actual, _ = _logits(merged, tokenizer)
    base, _ = _logits(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32), tokenizer)
    assert merging.max_abs_diff(expected, actual, mask) < 1e-5
    assert merging.max_abs_diff(base, actual, mask) > 1e-2
    info = json.loads((out / rundir.MERGE_INFO).read_text())
    assert (
        info["task"] == "arith" and info["base_model"] == str(tiny_model_dir) and info["dtype"] == "float32"
    )


@pytest.mark.slow
def test_merged_model_loads_and_generates_without_grpolab_or_peft(adapter_dir, tmp_path):
    out = tmp_path / "merged"
    merging.merge(adapter_dir, out)
    script = (
        "import sys; sys.modules['peft'] = None; sys.modules['grpolab'] = None\n"  # importing either fails
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        f"path = {str(out)!r}\n"
        "tokenizer = AutoTokenizer.from_pretrained(path)\n"
        "model = AutoModelForCausalLM.from_pretrained(path)\n"
        "ids = tokenizer.apply_chat_template([{'role': 'user', 'content': 'hi'}], add_generation_prompt=True,"
        " return_tensors='pt', return_dict=True)\n"
        "output = model.generate(**ids, max_new_tokens=3, do_sample=False)\n"
        "print('generated', output.shape[1] - ids['input_ids'].shape[1])\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "generated 3" in result.stdout


def test_verify_fails_when_a_merged_weight_is_corrupted(adapter_dir, tiny_model_dir, tokenizer):
    peft_model = _reference(adapter_dir, tiny_model_dir)
    batch = merging.probe_batch(tokenizer)
    reference = merging.probe_logits(peft_model, batch)
    merged = peft_model.merge_and_unload()
    difference, ok = merging.verify(merged, batch, reference, atol=1e-4)
    assert ok and difference < 1e-5
    with torch.no_grad():
        merged.model.layers[1].mlp.down_proj.weight[0, 0] += 0.5
    difference, ok = merging.verify(merged, batch, reference, atol=1e-4)
    assert not ok and difference > 1e-3


def test_max_abs_diff_ignores_padding_positions():
    expected = torch.zeros(2, 3, 5)
    actual = expected.clone()
    actual[0, 0] = 100.0  # a padded position
    actual[1, 2, 4] = 0.25
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    assert merging.max_abs_diff(expected, actual, mask) == 0.25


def _main(*argv) -> int:
    return cli.main(["merge", *map(str, argv)])


def test_cli_refuses_a_non_empty_out_without_force_then_replaces_it_with_force(adapter_dir, tmp_path, capsys):
    out = tmp_path / "merged"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    assert _main("--adapter", adapter_dir, "--out", out) == 2
    assert "is not empty: add --force" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "old"
    assert _main("--adapter", adapter_dir, "--out", out, "--force") == 0
    stdout = capsys.readouterr().out
    assert "max |logit difference| vs base + adapter: " in stdout and f"merged model saved to {out}" in stdout
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["merged"]  # nothing left beside it


def test_cli_exits_1_and_writes_nothing_when_the_logits_differ(adapter_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(merging, "verify", lambda model, batch, reference, atol: (0.5, False))
    out = tmp_path / "merged"
    assert _main("--adapter", adapter_dir, "--out", out) == 1
    err = capsys.readouterr().err
    assert "max |logit difference| vs base + adapter: 0.5 (atol 0.001, float32)" in err
    assert f"the merged model does not match, nothing was written to {out}" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["adapter", "parent of adapter"])
def test_cli_never_replaces_its_own_inputs(adapter_dir, where, capsys):
    out = adapter_dir if where == "adapter" else adapter_dir.parent
    assert _main("--adapter", adapter_dir, "--out", out, "--force") == 2
    assert "an input of the merge" in capsys.readouterr().err
    assert (adapter_dir / "adapter_config.json").is_file()


def test_cli_rejects_a_file_as_out_and_a_negative_atol(adapter_dir, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert _main("--adapter", adapter_dir, "--out", blocker) == 2
    assert "is a file" in capsys.readouterr().err
    assert _main("--adapter", adapter_dir, "--out", tmp_path / "m", "--atol", "-1") == 2
    assert "--atol must be a number >= 0, got -1.0" in capsys.readouterr().err


def test_cli_refuses_a_base_model_the_adapter_was_not_trained_on(adapter_dir, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text("{}")
    assert _main("--adapter", adapter_dir, "--model", other, "--out", tmp_path / "m") == 2
    assert "was trained on" in capsys.readouterr().err


def test_refusals_come_before_the_base_model_is_fetched_or_converted(
    adapter_dir, tmp_path, capsys, monkeypatch
):
    """On a fresh machine resolving the embedded model converts its GGUF (a minute of progress bars): a
    wrong --model or a non-empty --out is refused before that."""
    import grpolab.models

    resolved = []
    monkeypatch.setattr(grpolab.models, "resolve", lambda name: resolved.append(name) or name)
    assert _main("--adapter", adapter_dir, "--model", "smollm2-135m-instruct", "--out", tmp_path / "m") == 2
    assert "was trained on" in capsys.readouterr().err
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("")
    assert _main("--adapter", adapter_dir, "--out", full) == 2
    assert "is not empty" in capsys.readouterr().err
    assert resolved == []


def test_bfloat16_merge_saves_bfloat16_weights(adapter_dir, tmp_path):
    from safetensors import safe_open

    report = merging.merge(adapter_dir, tmp_path / "m", dtype="bfloat16")
    assert report.ok and report.atol == merging.DEFAULT_ATOL["bfloat16"]
    with safe_open(tmp_path / "m" / "model.safetensors", "pt") as weights:
        assert {weights.get_tensor(name).dtype for name in weights.keys()} == {torch.bfloat16}


@pytest.fixture(scope="module")
def bf16_adapter_dir(tmp_path_factory, tiny_model_dir) -> Path:
    """A run whose base checkpoint is stored in bfloat16 (config.json says dtype: bfloat16)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_dir = tmp_path_factory.mktemp("bf16-base")
    AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).save_pretrained(base_dir)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(base_dir)
    directory = tmp_path_factory.mktemp("bf16-run")
    _peft_model(tiny_model_dir).save_pretrained(directory)
    (directory / "grpolab_run.json").write_text(json.dumps({"base_model": str(base_dir), "task": "arith"}))
    return directory


@pytest.mark.parametrize(
    ("fixture", "dtype", "expected"),
    [
        ("adapter_dir", "auto", "float32"),
        ("bf16_adapter_dir", "auto", "bfloat16"),
        ("bf16_adapter_dir", "float32", "float32"),
    ],
)
def test_merge_runs_in_the_bases_own_dtype_with_its_tolerance(fixture, dtype, expected, request, tmp_path):
    from safetensors import safe_open

    report = merging.merge(request.getfixturevalue(fixture), tmp_path / "m", dtype=dtype)
    assert (report.ok, report.dtype, report.atol) == (True, expected, merging.DEFAULT_ATOL[expected])
    with safe_open(tmp_path / "m" / "model.safetensors", "pt") as weights:
        assert {weights.get_tensor(name).dtype for name in weights.keys()} == {getattr(torch, expected)}
    assert json.loads((tmp_path / "m" / rundir.MERGE_INFO).read_text())["dtype"] == expected


def test_merge_estimates_memory_from_the_checkpoint(adapter_dir, tiny_model_dir):
    on_disk = (tiny_model_dir / "model.safetensors").stat().st_size  # float32
    base = str(tiny_model_dir)
    assert merging.weights_bytes(base, base, "float32") == on_disk
    assert merging.weights_bytes(base, base, "bfloat16") == on_disk / 2


def _fake_cuda(monkeypatch, free_bytes: int, ram_bytes: int) -> None:
    import types

    import psutil

    from grpolab import placement

    monkeypatch.setattr(placement, "detect", lambda: placement.Hardware("cuda", bf16=True))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index: (free_bytes, 80 * 2**30))
    monkeypatch.setattr(psutil, "virtual_memory", lambda: types.SimpleNamespace(available=ram_bytes))


def test_merge_refuses_a_gpu_too_small_naming_device_cpu(adapter_dir, tmp_path, capsys, monkeypatch):
    _fake_cuda(monkeypatch, free_bytes=1000, ram_bytes=64 * 2**30)
    assert _main("--adapter", adapter_dir, "--out", tmp_path / "m") == 2
    err = capsys.readouterr().err
    assert (
        "but cuda (2 device(s)) has 0.0 GiB free: use --device cpu (64.0 GiB of RAM available), "
        "or --dtype bfloat16 to halve it" in err
    )
    assert not (tmp_path / "m").exists()


def test_merge_refuses_too_little_ram(adapter_dir, tmp_path, capsys, monkeypatch):
    _fake_cuda(monkeypatch, free_bytes=80 * 2**30, ram_bytes=1000)
    assert (
        _main("--adapter", adapter_dir, "--out", tmp_path / "m", "--device", "cpu", "--dtype", "bfloat16")
        == 2
    )
    assert (
        "in bfloat16 needs about 0.0 GiB but RAM has 0.0 GiB free: free memory or use a machine with more RAM"
        in capsys.readouterr().err
    )


def test_merge_loads_on_the_gpu_with_the_placement(adapter_dir, tiny_model_dir, tmp_path, monkeypatch):
    from transformers import modeling_utils

    calls = []

    def from_pretrained(cls, source, *args, **kwargs):
        calls.append(kwargs)
        raise RuntimeError("loaded")

    _fake_cuda(monkeypatch, free_bytes=80 * 2**30, ram_bytes=64 * 2**30)
    monkeypatch.setattr(modeling_utils.PreTrainedModel, "from_pretrained", classmethod(from_pretrained))
    with pytest.raises(RuntimeError, match="loaded"):
        merging.merge(adapter_dir, tmp_path / "m")
    assert (calls[0]["device_map"], calls[0]["dtype"]) == ("auto", "float32")
