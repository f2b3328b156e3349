"""Recipes and flags: every shipped YAML validates; mistakes are one-line errors naming the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from grpolab.cli import main
from grpolab.errors import UserError
from grpolab.training import recipes

CONFIGS = sorted(Path(recipes.recipes_dir()).glob("*.yaml"))
SFT_RECIPES = [path for path in CONFIGS if path.name.startswith("sft-")]
GRPO_RECIPES = [path for path in CONFIGS if path not in SFT_RECIPES]


def test_recipes_are_shipped():
    names = {path.name for path in CONFIGS}
    assert {"default.yaml", "gsm8k-qwen3-32b-unsloth.yaml", "gsm8k-qwen3-32b-a100.yaml",
            "sudoku-qwen2.5-3b.yaml", "sudoku-qwen2.5-7b.yaml"} <= names


@pytest.mark.parametrize("path", GRPO_RECIPES, ids=lambda p: p.name)
def test_every_grpo_recipe_validates(path):
    train_args, grpo_config, model_config = recipes.parse_train_args(["--config", str(path)])
    config = recipes.read_yaml(path)
    assert train_args.task == config["task"]
    assert model_config.model_name_or_path == config["model_name_or_path"]
    assert grpo_config.num_generations == config.get("num_generations", 8)
    generation_batch = grpo_config.per_device_train_batch_size * grpo_config.steps_per_generation
    assert generation_batch % grpo_config.num_generations == 0


@pytest.mark.parametrize("path", SFT_RECIPES, ids=lambda p: p.name)
def test_every_sft_recipe_validates(path):
    from trl import SFTConfig

    train_args, sft_config, _ = recipes.parse_train_args(["--config", str(path)], SFTConfig, command="sft")
    assert train_args.task == recipes.read_yaml(path)["task"]
    assert sft_config.max_steps == recipes.read_yaml(path)["max_steps"]


def _recipe_inputs(directory: Path, path: Path) -> None:
    """The data file and warm-up adapter a recipe names, as 'grpolab data' and 'grpolab sft' leave them."""
    import json

    from grpolab.tasks import sudoku

    config = recipes.read_yaml(path)
    if config.get("data_file"):
        rows = sudoku.generate_rows(40, split="train") + sudoku.generate_rows(10, split="test")
        (directory / config["data_file"]).parent.mkdir(parents=True, exist_ok=True)
        (directory / config["data_file"]).write_text("".join(json.dumps(row) + "\n" for row in rows))
    if config.get("init_adapter"):
        adapter = directory / config["init_adapter"]
        adapter.mkdir(parents=True)
        info = {"base_model": config["model_name_or_path"], "task": config["task"]}
        (adapter / "grpolab_run.json").write_text(json.dumps(info))
        (adapter / "adapter_config.json").write_text("{}")


@pytest.mark.parametrize("path", GRPO_RECIPES, ids=lambda p: p.name)
def test_every_grpo_recipe_dry_runs(path, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _recipe_inputs(tmp_path, path)
    assert main(["train", "--config", str(path), "--dry_run"]) == 0
    out = capsys.readouterr().out
    assert "memory (rough)" in out
    assert "no weights were loaded" in out
    assert "rewards          " in out and "data             " in out
    assert not (tmp_path / recipes.read_yaml(path)["output_dir"]).exists()


@pytest.mark.parametrize("path", SFT_RECIPES, ids=lambda p: p.name)
def test_every_sft_recipe_dry_runs_without_training(path, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["sft", "--config", str(path), "--dry_run"]) == 0
    out = capsys.readouterr().out
    assert "supervised warm-up" in out and "no weights were loaded" in out
    assert f"data             {recipes.read_yaml(path)['num_train']} rows" in out
    assert not (tmp_path / recipes.read_yaml(path)["output_dir"]).exists()


def test_reference_gsm8k_recipe_matches_the_reference_project():
    recipe = Path(__file__).resolve().parents[1] / "configs" / "gsm8k-qwen3-32b-unsloth.yaml"  # this tree
    train_args, grpo, model = recipes.parse_train_args(["--config", str(recipe)])
    assert (model.lora_r, model.lora_alpha, model.load_in_4bit, train_args.use_unsloth) == (
        16,
        16,
        True,
        False,  # Unsloth does not install beside TRL 1.16 (review F4): transformers + bitsandbytes 4-bit
    )
    assert (grpo.per_device_train_batch_size, grpo.gradient_accumulation_steps, grpo.num_generations) == (
        2,
        4,
        4,
    )
    assert (grpo.learning_rate, grpo.beta, grpo.temperature, grpo.max_completion_length) == (
        5e-5,
        0.01,
        0.7,
        512,
    )
    assert grpo.optim == "adamw_8bit"


def test_flags_override_yaml():
    _, grpo, model = recipes.parse_train_args(["--max_steps", "3", "--lora_r", "4"])
    assert grpo.max_steps == 3
    assert model.lora_r == 4


@pytest.mark.parametrize(("argv", "task", "options"), [
    (["--task", "calc"], "calc", {}),  # the default recipe's arith levels are not calc's
    (["--task=calc"], "calc", {}),
    (["--task", "arith"], "arith", {"levels": "add-20"}),  # the recipe's own task keeps its options
    (["--task", "calc", "--task_options", '{"levels": "mul-4"}'], "calc", {"levels": "mul-4"}),
])
def test_task_options_follow_the_task(argv, task, options):
    train_args, _, _ = recipes.parse_train_args(argv)
    assert (train_args.task, train_args.task_options) == (task, options)


def test_default_recipe_is_used_without_config():
    train_args, grpo, model = recipes.parse_train_args([])
    assert train_args.task == "arith"
    assert model.model_name_or_path == "smollm2-135m-instruct"
    assert grpo.bf16 is False  # no bf16 hardware here; TRL's default True would fail


def write(tmp_path, text: str) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("task: arith\nlearning_rat: 0.1\n", "unknown key 'learning_rat'; did you mean 'learning_rate'?"),
        ("learning_rate: fast\n", "'learning_rate' must be float, got str 'fast'"),
        ("max_steps: 1.5\n", "'max_steps' must be int, got float 1.5"),
        ("use_peft: [1]\n", "'use_peft' must be bool, got list"),
        ("- a\n- b\n", "a recipe must be a YAML mapping"),
        ("task: [unclosed\n", "not valid YAML"),
        ("num_generations: 3\nper_device_train_batch_size: 8\n", "num_generations"),
    ],
)
def test_bad_recipes_are_one_line_errors(tmp_path, yaml_text, message):
    with pytest.raises(UserError) as error:
        recipes.parse_train_args(["--config", write(tmp_path, yaml_text)])
    assert message in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--num_trainn", "3"], "unknown flag --num_trainn; did you mean --num_train?"),
        (["--learning_rate", "abc"], "invalid float value: 'abc'"),
        (["--config"], "--config needs a YAML file path"),
        (["--config", "no-such-recipe"], "config file 'no-such-recipe' not found"),
        (["--task_options", "[1, 2]"], "--task_options must be a mapping"),
    ],
)
def test_bad_flags_are_one_line_errors(argv, message):
    with pytest.raises(UserError) as error:
        recipes.parse_train_args(argv)
    assert message in str(error.value)


def test_bad_flag_exits_2_through_the_cli(capsys):
    assert main(["train", "--num_trainn", "3"]) == 2
    err = capsys.readouterr().err
    assert err == "grpolab train: error: unknown flag --num_trainn; did you mean --num_train?\n"


def test_bare_resume_means_latest():
    train_args, _, _ = recipes.parse_train_args(["--resume", "--max_steps", "2"])
    assert train_args.resume == "latest"
    train_args, _, _ = recipes.parse_train_args(["--max_steps", "2", "--resume"])
    assert train_args.resume == "latest"


def test_single_string_stands_for_a_list(tmp_path):
    train_args, _, model = recipes.parse_train_args(
        ["--config", write(tmp_path, "reward_funcs: arith_correct\n")]
    )
    assert train_args.reward_funcs == ["arith_correct"]


def test_accepted_types_table():
    from typing import Literal

    assert recipes.accepted_types(int) == {int}
    assert recipes.accepted_types(int | None) == {int}
    assert recipes.accepted_types(list[str] | None) == {list, tuple, str}
    assert recipes.accepted_types(Literal["a", "b"]) == {str}
    assert recipes.accepted_types(dict | str | None) == {dict, str}


# ---- keys TRL / transformers removed, and the reference projects' own keys -----------------------------

REPLACED = [
    # (key, value as YAML, text the error must hold: the replacement, as a recipe key)
    ("max_prompt_length", "400", "'vllm_max_model_length' caps prompt + completion"),
    ("warmup_ratio", "0.05", "use 'warmup_steps' with the same value"),
    ("evaluation_strategy", "'no'", "renamed 'eval_strategy'"),
    ("torch_dtype", "bfloat16", "renamed 'dtype'"),
    ("no_cuda", "true", "use 'use_cpu' true"),
    ("overwrite_output_dir", "true", "delete it ('resume' continues"),
    ("logging_dir", "logs", "TENSORBOARD_LOGGING_DIR"),
    ("vllm_guided_decoding_regex", "'x'", "renamed 'vllm_structured_outputs_regex'"),
    ("dataset_id_or_path", "json", "give the JSONL file as 'data_file'"),
    ("data_files", "data/sudoku_4x4_qa.jsonl", "use 'data_file'"),
    ("model_name", "unsloth/Qwen3-32B", "use 'model_name_or_path'"),
    ("target_modules", "[q_proj]", "use 'lora_target_modules'"),
    ("wandb_project", "qwen3-32b-grpo", "set WANDB_PROJECT"),
    ("wandb_name", "run1", "use 'run_name'"),
]


@pytest.mark.parametrize(("key", "value", "replacement"), REPLACED, ids=[row[0] for row in REPLACED])
def test_replaced_key_in_a_recipe_names_its_replacement(tmp_path, key, value, replacement):
    path = write(tmp_path, f"task: sudoku\n{key}: {value}\n")
    with pytest.raises(UserError) as error:
        recipes.parse_train_args(["--config", path])
    message = str(error.value)
    assert message.startswith(f"{path}: '{key}' ") and replacement in message
    assert "\n" not in message and "unknown key" not in message


@pytest.mark.parametrize(("key", "value", "replacement"), REPLACED, ids=[row[0] for row in REPLACED])
def test_replaced_key_as_a_flag_names_its_replacement(key, value, replacement):
    flag_replacement = re.sub(r"'(\w+)'", r"--\1", replacement)
    with pytest.raises(UserError) as error:
        recipes.parse_train_args([f"--{key}", value])
    assert str(error.value).startswith(f"--{key} ") and flag_replacement in str(error.value)


def test_reference_flags_through_the_cli(capsys):
    assert main(["train", "--no_wandb"]) == 2
    error = capsys.readouterr().err
    assert error == "grpolab train: error: --no_wandb is not a grpolab key: use --report_to none\n"
    assert main(["sft", "--warmup_ratio=0.1"]) == 2
    error = capsys.readouterr().err
    assert "--warmup_ratio is no longer in transformers (removed in 5.2): use --warmup_steps" in error


@pytest.mark.parametrize("trainer", ["grpo", "sft"])
def test_replaced_keys_are_gone_and_their_replacements_exist(trainer):
    """Fails when TRL or transformers brings a key back or drops a replacement the table names."""
    from trl import GRPOConfig, ModelConfig, SFTConfig

    from grpolab.training.args import TrainArgs

    config = {"grpo": GRPOConfig, "sft": SFTConfig}[trainer]
    known = recipes.all_fields((TrainArgs, config, ModelConfig))
    grpo_only = {"vllm_max_model_length", "vllm_mode", "vllm_structured_outputs_regex"}
    for key, text in recipes.REPLACED_KEYS.items():
        assert key not in known, key
        named = set(re.findall(r"\{(\w+)\}", text)) - (grpo_only if trainer == "sft" else set())
        assert named <= set(known), (key, named - set(known))


@pytest.mark.parametrize(
    ("flags", "report_to"),
    [
        ([], ["tensorboard"]),
        (["--report_to", "none"], []),
        (["--report_to", "wandb"], ["wandb"]),
        (["--report_to", "tensorboard, wandb"], ["tensorboard", "wandb"]),
    ],
)
def test_report_to_defaults_to_tensorboard_and_takes_a_comma_list(flags, report_to):
    assert recipes.parse_train_args(flags)[1].report_to == report_to


@pytest.mark.parametrize("command", ["train", "sft"])
def test_trls_configs_carry_no_grpolab_state(command, tiny_model_dir, tmp_path):
    """The recipe's path and its own model_init_kwargs ride on grpolab's TrainArgs, not on TRL's config, and
    reach the run's files from there."""
    import json

    import yaml
    from trl import GRPOConfig, SFTConfig

    from grpolab.commands.sft import DEFAULT_RECIPE as SFT_RECIPE
    from grpolab.training import model, run

    trainer_config, recipe = {"sft": (SFTConfig, SFT_RECIPE), "train": (GRPOConfig, recipes.DEFAULT_RECIPE)}[
        command]
    parsed = recipes.parse_train_args(
        ["--model_name_or_path", str(tiny_model_dir), "--output_dir", str(tmp_path), "--model_init_kwargs",
         '{"use_cache": false}'], trainer_config, recipe, command)
    model.model_arguments(*parsed)
    train_args, config, model_config = parsed
    assert isinstance(config, trainer_config)
    assert [name for name in dir(config) if name.startswith("grpolab")] == []
    assert config.model_init_kwargs["use_cache"] is False and "device_map" in config.model_init_kwargs
    run.save_run_info(tmp_path, *parsed)
    assert json.loads((tmp_path / "grpolab_run.json").read_text())["recipe"] == train_args.recipe
    assert Path(train_args.recipe).name == Path(recipe).name
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved["model_init_kwargs"] == {"use_cache": False}
    assert not {"recipe", "recipe_init_kwargs"} & set(saved)
