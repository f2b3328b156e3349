"""grpolab sft end to end: metrics, loss curve, progress line, refusal of a used run directory, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from grpolab.cli import main
from grpolab.training import checkpoints


def sft_flags(model_dir: Path, output_dir: Path, steps: int, task: str = "arith") -> list[str]:
    return ["--model_name_or_path", str(model_dir), "--output_dir", str(output_dir), "--task", task,
            "--task_options", "{}", "--max_steps", str(steps), "--per_device_train_batch_size", "2",
            "--num_train", "16", "--max_length", "128", "--logging_steps", "1", "--save_steps", "1",
            "--torch_threads", "1", "--report_to", "none"]


def metric_rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def adapter_tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / "adapter_model.safetensors"))


@pytest.mark.slow
def test_two_sft_steps_on_the_embedded_model(tmp_path, embedded_model_dir, capfd):
    run = tmp_path / "sft"
    flags = sft_flags(embedded_model_dir, run, steps=2)
    assert main(["sft", *flags]) == 0
    out, err = capfd.readouterr()
    rows = metric_rows(run)
    assert [row["step"] for row in rows] == [1, 2]
    assert all(0 < row["loss"] < 10 and 0 <= row["mean_token_accuracy"] <= 1 for row in rows)
    assert rows[1]["seconds_per_step"] > 0
    assert (run / "loss_curve.png").stat().st_size > 10_000
    # The progress line, not transformers' raw log dicts.
    assert "sft: 100%" in err and "2/2" in err and f"loss={rows[-1]['loss']:.3g}" in err
    assert "{'loss'" not in out + err
    assert f"warm-up adapter saved to {run}" in out
    assert (run / "adapter_model.safetensors").is_file() and (run / "config.yaml").is_file()
    # The same command again refuses the finished run, in one line, and leaves it as it was.
    assert main(["sft", *flags]) == 2
    err = capfd.readouterr().err
    assert err.strip() == (f"grpolab sft: error: {run} already holds a run: add --resume to continue it, "
                           "or choose another --output_dir")
    assert [row["step"] for row in metric_rows(run)] == [1, 2]


@pytest.mark.slow
def test_sft_resume_continues_to_the_same_weights(tmp_path, tiny_model_dir):
    """Stop at step 2 (max_steps), resume to step 4: the steps continue, and the LoRA weights equal a run
    of 4 steps never stopped (exact: one thread, constant learning rate, restored optimizer and sampler)."""
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert main(["sft", *sft_flags(tiny_model_dir, straight, steps=4)]) == 0
    assert main(["sft", *sft_flags(tiny_model_dir, stopped, steps=2)]) == 0
    assert checkpoints.latest_complete(stopped).name == "checkpoint-2"
    assert main(["sft", *sft_flags(tiny_model_dir, stopped, steps=4)]) == 2  # no --resume: refused
    assert main(["sft", *sft_flags(tiny_model_dir, stopped, steps=4), "--resume"]) == 0
    assert checkpoints.latest_complete(stopped).name == "checkpoint-4"
    state = json.loads((stopped / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    assert [row["step"] for row in metric_rows(stopped)] == [1, 2, 3, 4]
    assert [row["loss"] for row in metric_rows(stopped)] == [row["loss"] for row in metric_rows(straight)]
    expected, resumed = adapter_tensors(straight), adapter_tensors(stopped)
    assert expected.keys() == resumed.keys()
    assert all(bool((expected[name] == resumed[name]).all()) for name in expected), "LoRA weights differ"


def test_sft_refuses_grpo_settings(capsys):
    assert main(["sft", "--reward_funcs", "arith_correct", "--dry_run"]) == 2
    assert capsys.readouterr().err.strip() == ("grpolab sft: error: --reward_funcs is a GRPO setting "
                                               "(grpolab train); grpolab sft trains on the task's reference "
                                               "replies: remove it")


def test_sft_help_names_its_own_recipe_and_config(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["sft", "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert "default: sft-sudoku-smollm2.yaml" in text and "TRL SFTConfig/ModelConfig" in text
    assert "GRPOConfig" not in text and "default.yaml" not in text.replace("sft-sudoku-smollm2.yaml", "")
    assert "--reward_funcs" not in text and "loss_curve.png" in text


def test_sft_relaunches_under_accelerate(monkeypatch, capsys):
    import subprocess

    launched = []
    monkeypatch.setattr(subprocess, "call", lambda command, env: launched.append((command, env)) or 0)
    assert main(["sft", "--accelerate_config", "cpu2", "--num_processes", "2", "--max_steps", "1"]) == 0
    [(command, env)] = launched
    assert command[command.index("--config_file") + 1].endswith("accelerate/cpu2.yaml")
    assert command[command.index("--num_processes") + 1] == "2"
    assert command[-5:] == ["-m", "grpolab", "sft", "--max_steps", "1"]
    assert env["ACCELERATE_USE_CPU"] == "true"
    assert "launching:" in capsys.readouterr().out


def sft_trainer(trainer_type, model_dir: Path, output_dir: Path, activation_checkpointing: bool = False):
    import torch
    from peft import LoraConfig
    from trl import SFTConfig

    from grpolab.training import recipes
    from grpolab.training.sft import reference_dataset

    train_args, _, _ = recipes.parse_train_args(
        ["--task", "arith", "--task_options", "{}", "--num_train", "8"],
        SFTConfig,
        "sft-sudoku-smollm2.yaml",
        "sft",
    )
    config = SFTConfig(
        output_dir=str(output_dir),
        per_device_train_batch_size=4,
        max_length=128,
        report_to="none",
        bf16=False,
        use_cpu=True,
        seed=0,
        activation_checkpointing=activation_checkpointing,
    )
    torch.manual_seed(0)  # the same LoRA A matrices in both trainers
    lora = LoraConfig(
        r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights="gaussian", task_type="CAUSAL_LM"
    )
    trainer = trainer_type(
        model=str(model_dir), args=config, train_dataset=reference_dataset(train_args, 0), peft_config=lora
    )
    for name, parameter in trainer.model.named_parameters():  # LoRA B starts at 0; make the LoRA path count
        if "lora_B" in name:
            parameter.data = torch.linspace(-0.05, 0.05, parameter.numel()).view_as(parameter)
    return trainer


@pytest.mark.parametrize("path", ["plain", "shared"])
@pytest.mark.parametrize("num_items_in_batch", [None, 37])
def test_plain_head_gives_trls_loss_gradients_and_metrics(tmp_path, tiny_model_dir, num_items_in_batch, path,
                                                          monkeypatch):
    """The CPU overrides against TRL's fused head on the same batch: loss within 1e-6, LoRA gradients within
    1e-5 (relative), entropy and token accuracy within 1e-5 (fp32; the two sum the vocabulary in other
    orders). 'shared' runs the batch's common prefix (chat template and system prompt) once."""
    import torch
    from trl import SFTTrainer

    from grpolab.training import sft

    shared_calls = []
    original = sft.shared_prefix_hidden
    monkeypatch.setattr(sft, "shared_prefix_hidden", lambda *a: shared_calls.append(a[1]) or original(*a))
    figures = {}
    for name, trainer_type in (("trl", SFTTrainer), (path, sft.trainer_class(path, "cpu"))):
        trainer = sft_trainer(trainer_type, tiny_model_dir, tmp_path / name)
        forward = trainer.model.get_base_model().forward
        patched = getattr(forward.__func__, "func", None) is sft._plain_head_forward
        assert patched == (name != "trl")
        assert not patched or forward.__func__.keywords["share_prefix"] == (name == "shared")
        batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
        assert (batch["labels"] == -100).float().mean() > 0.3  # the prompt is masked: the case that matters
        assert (batch["attention_mask"] == 0).any()  # rows of other lengths: right padding is covered
        prefix = sft.shared_prefix_length(batch["labels"], batch["input_ids"], batch["attention_mask"])
        assert 20 < prefix < int((batch["labels"][:, 1:] != -100).int().argmax(1).min())
        trainer.model.train()
        loss = trainer.compute_loss(trainer.model, batch, num_items_in_batch=num_items_in_batch)
        loss.backward()
        grads = {key: p.grad.clone() for key, p in trainer.model.named_parameters() if p.grad is not None}
        metrics = {
            key: values[-1] for key, values in trainer._metrics["train"].items() if key != "num_tokens"
        }
        figures[name] = (float(loss.detach()), grads, metrics)
    (trl_loss, trl_grads, trl_metrics), (plain_loss, plain_grads, plain_metrics) = (
        figures["trl"],
        figures[path],
    )
    assert shared_calls == ([prefix] if path == "shared" else [])  # the path under test ran, once
    assert trl_loss > 1 and abs(plain_loss - trl_loss) <= 1e-6
    assert trl_grads.keys() == plain_grads.keys() and len(trl_grads) > 0
    for key in trl_grads:
        torch.testing.assert_close(plain_grads[key], trl_grads[key], rtol=1e-5, atol=1e-7)
    assert trl_metrics.keys() == plain_metrics.keys() == {"entropy", "mean_token_accuracy"}
    assert plain_metrics == pytest.approx(trl_metrics, abs=1e-5)


def test_cpu_sft_uses_the_plain_head_and_fused_elsewhere():
    from trl import SFTTrainer

    from grpolab.training.sft import PlainHeadSFTTrainer, SharedPrefixSFTTrainer, trainer_class

    assert trainer_class("auto", "cpu") is SharedPrefixSFTTrainer
    assert trainer_class("auto", "cuda") is SFTTrainer
    assert (
        trainer_class("fused", "cpu") is SFTTrainer and trainer_class("plain", "cuda") is PlainHeadSFTTrainer
    )


def test_shared_prefix_stops_before_the_first_labelled_position_and_any_difference():
    import torch

    from grpolab.training.sft import shared_prefix_length

    ids = torch.tensor([[5, 6, 7, 8, 9, 1, 2, 0], [5, 6, 7, 8, 3, 4, 0, 0], [5, 6, 7, 8, 9, 9, 9, 9]])
    mask = (ids != 0).long()
    labels = torch.full_like(ids, -100)
    labels[:, 6:] = 1
    assert shared_prefix_length(labels, ids, mask) == 4  # row 1 differs at position 4
    labels[1, 3] = 1  # position 2 now predicts a labelled token: its hidden state is needed
    assert shared_prefix_length(labels, ids, mask) == 2
    assert shared_prefix_length(labels, ids, mask, position_ids=ids) == 0  # padding-free inputs: not shared
    assert shared_prefix_length(labels[:1], ids[:1], mask[:1]) == 0  # one row: nothing to share
    different = ids.clone()
    different[1, 1] = 4
    assert shared_prefix_length(labels, different, mask) == 0  # a prefix of one token does not pay


@pytest.mark.parametrize(("files", "hint"), [
    (["config.json", "model.safetensors"], "it holds a full model (trained without use_peft): pass it as "
                                           "--model_name_or_path, or train the warm-up with use_peft: true"),
    (["notes.txt"], "point it at a grpolab sft or train run"),
])
def test_init_adapter_without_an_adapter_is_one_line_naming_the_fix(tmp_path, files, hint):
    from grpolab.errors import UserError
    from grpolab.training.checks import check_init_adapter

    for name in files:
        (tmp_path / name).write_text("{}")
    with pytest.raises(UserError) as error:
        check_init_adapter(tmp_path)
    assert str(error.value) == (f"--init_adapter {tmp_path} holds no LoRA adapter (no adapter_config.json): "
                                f"{hint}")
    (tmp_path / "adapter_config.json").write_text("{}")
    check_init_adapter(tmp_path)  # an adapter passes
