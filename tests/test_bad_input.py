"""Bad input through the real CLI: one line naming the problem, exit 2, no traceback, nothing left behind.

Each case runs ``python -m grpolab ...`` in a subprocess in a fresh folder holding the case's files, and
checks: the exit code (2 for the user's mistake, 1 for one that is not), stderr ending in one
``grpolab CMD: error: ...`` line that holds the case's fragment, no ``Traceback``, and every file in the
folder exactly as it was (no partial output, nothing of the user's changed). Cases that need a model run
on the tiny random model of conftest.py and are marked slow.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SUDOKU_ROW = '{"question": "1234341221434_21", "answer": "1234341221434321"}\n'
GSM8K_ROW = '{"question": "How many?", "answer": "Two and two.\\n#### 4"}\n'
ARITH_ROW = '{"question": "7 + 12", "answer": "19"}\n'
RUN_INFO = json.dumps({"base_model": "smollm2-135m-instruct", "task": "arith", "identity": {"task": "arith"}})
OTHER_BASE = json.dumps({"base_model": "some/other-model", "task": "arith"})
ADAPTER_CONFIG = json.dumps({"base_model_name_or_path": "smollm2-135m-instruct", "peft_type": "LORA"})
# A weights file cut short: its header promises 16 bytes of tensor data, 8 follow.
_HEADER = b'{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}'
TRUNCATED_WEIGHTS = len(_HEADER).to_bytes(8, "little") + _HEADER + bytes(8)
DAMAGED_ADAPTER = {"a/grpolab_run.json": RUN_INFO, "a/adapter_config.json": ADAPTER_CONFIG,
                   "a/adapter_model.safetensors": TRUNCATED_WEIGHTS}


# Reward functions of a user's own, imported by the subprocess as tests.test_bad_input:NAME.
def raising_reward(completions, **kwargs):
    raise ZeroDivisionError("user bug")


def nan_reward(completions, **kwargs):
    return [math.nan] * len(completions)


def short_reward(completions, **kwargs):
    return [1.0]


def hanging_reward(completions, **kwargs):
    time.sleep(600)
    return [0.0] * len(completions)


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]
    fragment: str
    code: int = 2
    files: dict[str, str | bytes] = field(default_factory=dict)  # path -> content; "dir/" makes a folder
    slow: bool = False  # needs the tiny model ({model} in argv)
    file_size_limit: int | None = None  # RLIMIT_FSIZE in bytes: a full disk as far as the run can tell


def case(id, argv, fragment, **options):
    return Case(id, tuple(argv.split()) if isinstance(argv, str) else tuple(argv), fragment, **options)


TRAIN = "train --task_options {}"
TINY = ("--model_name_or_path {model} --output_dir run --max_steps 1 --per_device_train_batch_size 4 "
        "--num_generations 4 --max_completion_length 4 --num_train 8 --save_steps 1 --logging_steps 1 "
        "--torch_threads 1 --plot false")

CASES = [
    # Recipes: YAML and flags
    case(
        "yaml-malformed",
        "train --config bad.yaml",
        "bad.yaml:2: not valid YAML",
        files={"bad.yaml": "task: [arith\n"},
    ),
    case(
        "yaml-not-a-mapping",
        "train --config list.yaml",
        "must be a YAML mapping",
        files={"list.yaml": "- a\n- b\n"},
    ),
    case(
        "yaml-wrong-type",
        "train --config t.yaml",
        "'max_steps' must be int, got str 'ten'",
        files={"t.yaml": "max_steps: ten\n"},
    ),
    case(
        "yaml-wrong-type-list",
        "train --config t.yaml",
        "'learning_rate' must be float, got list",
        files={"t.yaml": "learning_rate: [1]\n"},
    ),
    case(
        "yaml-unknown-key",
        "train --config t.yaml",
        "unknown key 'learnin_rate'; did you mean 'learning_rate'?",
        files={"t.yaml": "learnin_rate: 0.1\n"},
    ),
    case("yaml-missing", "train --config nosuch.yaml", "config file 'nosuch.yaml' not found"),
    case(
        "flag-unknown", "train --learnin_rate 1", "unknown flag --learnin_rate; did you mean --learning_rate?"
    ),
    case("flag-wrong-type", "train --max_steps ten", "invalid int value: 'ten'"),
    case(
        "batch-indivisible",
        "train --per_device_train_batch_size 3 --num_generations 4 --dry_run",
        "generation_batch_size (3) must be divisible by num_generations (4)",
    ),
    case(
        "batch-one-generation", "train --num_generations 1 --dry_run", "GRPO requires at least 2 generations"
    ),
    case("num-train-zero", "train --num_train 0 --dry_run", "--num_train (0) must be at least 1"),
    case("task-options-malformed", "train --task_options { --dry_run", "--task_options must be a mapping"),
    case("reward-timeout-negative", "train --reward_timeout -1 --dry_run", "--reward_timeout (-1) must be 0"),
    # Tasks, rewards, data
    case("task-unknown", "train --task nosuchtask --dry_run", "unknown task 'nosuchtask'"),
    case(
        "reward-import",
        "train --reward_funcs nosuch.module:fn --dry_run",
        "cannot import reward function 'nosuch.module:fn'",
    ),
    case(
        "reward-unknown",
        "train --reward_funcs arith_nosuch --dry_run",
        "unknown reward 'arith_nosuch' for task arith",
    ),
    case("data-missing", f"{TRAIN} --data_file none.jsonl --dry_run", "data file none.jsonl does not exist"),
    case("data-empty", f"{TRAIN} --data_file e.jsonl --dry_run", "has no rows", files={"e.jsonl": "\n\n"}),
    case(
        "data-corrupt-json",
        f"{TRAIN} --data_file c.jsonl --dry_run",
        "c.jsonl:2: not valid JSON",
        files={"c.jsonl": ARITH_ROW + '{"question": \n'},
    ),
    case(
        "data-not-utf8",
        f"{TRAIN} --task sudoku --data_file b.jsonl --dry_run",
        "b.jsonl:1: not UTF-8 text",
        files={"b.jsonl": b"\xff\xfe\x00garbage\n"},
    ),
    case(
        "data-wrong-task-arith",
        f"{TRAIN} --data_file s.jsonl --dry_run",
        "holds no arithmetic expression",
        files={"s.jsonl": SUDOKU_ROW},
    ),
    case(
        "data-wrong-task-sudoku",
        f"{TRAIN} --task sudoku --data_file g.jsonl --dry_run",
        "is not 16 characters",
        files={"g.jsonl": GSM8K_ROW},
    ),
    case(
        "data-wrong-task-gsm8k",
        f"{TRAIN} --task gsm8k --data_file a.jsonl --dry_run",
        "does not end with a final '#### N'",
        files={"a.jsonl": ARITH_ROW},
    ),
    case(
        "task-option-unknown",
        "train --task sudoku --task_options {nosuch:1} --dry_run",
        "unknown sudoku option(s) nosuch",
    ),
    # Output folder, checkpoints, adapters
    case(
        "output-is-a-file",
        "train --output_dir file/run --dry_run",
        "file is a file, not a folder",
        files={"file": "mine"},
    ),
    case(
        "output-holds-a-run",
        "train --output_dir run --dry_run",
        "run already holds a run: add --resume",
        files={"run/metrics.jsonl": '{"step": 1}\n', "run/adapter_config.json": ADAPTER_CONFIG},
    ),
    case("resume-nothing", "train --output_dir run --resume --dry_run", "no complete checkpoint in run"),
    case(
        "resume-another-task",
        "train --output_dir run --resume --task sudoku --task_options {}",
        "the config changes task: 'arith' -> 'sudoku'",
        files={"run/grpolab_run.json": RUN_INFO, "run/metrics.jsonl": '{"step": 1}\n'},
    ),
    case(
        "resume-corrupt-checkpoint",
        "train --output_dir run --resume run/checkpoint-2 --dry_run",
        "run/checkpoint-2 is incomplete",
        files={"run/checkpoint-2/trainer_state.json": '{"global_'},
    ),
    case(
        "resume-damaged-weights",
        "train --output_dir run --resume --dry_run",
        "--resume: run/checkpoint-2/adapter_model.safetensors is damaged (Error while deserializing header",
        files={
            "run/metrics.jsonl": '{"step": 2}\n',
            "run/checkpoint-2/trainer_state.json": '{"global_step": 2}',
            "run/checkpoint-2/adapter_model.safetensors": TRUNCATED_WEIGHTS,
        },
    ),
    case(
        "init-adapter-damaged-weights",
        "train --init_adapter a --dry_run",
        "a/adapter_model.safetensors is damaged (Error while deserializing header",
        files=DAMAGED_ADAPTER,
    ),
    case(
        "init-adapter-missing",
        "train --init_adapter nowhere --dry_run",
        "adapter directory nowhere does not exist",
    ),
    case(
        "init-adapter-other-base",
        "train --init_adapter a --dry_run",
        "was trained on 'some/other-model'",
        files={"a/grpolab_run.json": OTHER_BASE},
    ),
    case(
        "init-adapter-corrupt",
        "train --init_adapter a --dry_run",
        "a/grpolab_run.json is damaged",
        files={"a/grpolab_run.json": "{bad"},
    ),
    case(
        "accelerate-config-missing",
        "train --accelerate_config nosuch --dry_run",
        "accelerate config 'nosuch' not found",
    ),
    # sft shares the checks
    case("sft-task-unknown", "sft --task nosuchtask --dry_run", "unknown task 'nosuchtask'"),
    case(
        "sft-output-holds-a-run",
        "sft --output_dir run --dry_run",
        "run already holds a run",
        files={"run/adapter_config.json": ADAPTER_CONFIG},
    ),
    case(
        "sft-yaml-unknown-key",
        "sft --config t.yaml",
        "unknown key 'num_generations'",
        files={"t.yaml": "num_generations: 4\n"},
    ),
    # eval, chat, merge, data, model
    case("eval-adapter-missing", "eval --adapter nowhere", "adapter directory nowhere does not exist"),
    case(
        "eval-adapter-corrupt",
        "eval --adapter a",
        "a/adapter_config.json is damaged",
        files={"a/adapter_config.json": "{bad"},
    ),
    case(
        "eval-adapter-other-base",
        "eval --adapter a --model smollm2-135m-instruct",
        "was trained on 'some/other-model'",
        files={"a/grpolab_run.json": OTHER_BASE},
    ),
    case(
        "eval-adapter-damaged-weights",
        "eval --adapter a --num 2",
        "a/adapter_model.safetensors is damaged",
        files=DAMAGED_ADAPTER,
    ),
    case("eval-k-greedy", "eval --k 2", "--k 2 needs sampling"),
    case("eval-compare-missing", "eval --compare nowhere", "nowhere is not an eval output directory"),
    case("eval-task-unknown", "eval --task nosuch", "unknown task 'nosuch'"),
    case("chat-temperature", "chat --temperature -1", "--temperature must be a number >= 0"),
    case("chat-top-p", "chat --top_p 2", "--top_p must be a number above 0 and at most 1"),
    case("chat-max-new-tokens", "chat --max_new_tokens 0", "--max_new_tokens must be a whole number"),
    case("chat-adapter-missing", "chat --adapter nowhere", "adapter directory nowhere does not exist"),
    case(
        "chat-adapter-other-base",
        "chat --adapter a --model smollm2-135m-instruct",
        "was trained on 'some/other-model'",
        files={"a/grpolab_run.json": OTHER_BASE},
    ),
    case(
        "chat-adapter-damaged-weights",
        "chat --adapter a",
        "a/adapter_model.safetensors is damaged",
        files=DAMAGED_ADAPTER,
    ),
    case("merge-no-out", "merge --adapter a", "the following arguments are required: --out"),
    case(
        "merge-adapter-corrupt",
        "merge --adapter a --out m",
        "a/grpolab_run.json is damaged",
        files={"a/grpolab_run.json": "[]"},
    ),
    case(
        "merge-adapter-other-base",
        "merge --adapter a --model smollm2-135m-instruct --out m",
        "was trained on 'some/other-model'",
        files={"a/grpolab_run.json": OTHER_BASE},
    ),
    case(
        "merge-adapter-damaged-weights",
        "merge --adapter a --out m",
        "a/adapter_model.safetensors is damaged",
        files=DAMAGED_ADAPTER,
    ),
    case(
        "data-arith-test-count",
        "data arith --num_test 500 --out a.jsonl",
        "arith has only 110 distinct test rows with these settings, not 500: pass --num_test 110 or less",
    ),
    case("data-blanks", "data sudoku --blanks 13", "bad blanks value '13'"),
    case(
        "data-out-unwritable",
        "data arith --num 5 --out file/x.jsonl",
        "cannot write file/x.jsonl",
        files={"file": "mine"},
    ),
    case("model-unknown", "model check --model ./nowhere", "unknown model './nowhere'"),
    # Real runs on the tiny model: the user's reward misbehaves, the disk is full
    case(
        "reward-raises",
        f"train {TINY} --reward_funcs tests.test_bad_input:raising_reward",
        "reward function 'raising_reward' raised ZeroDivisionError: user bug",
        slow=True,
    ),
    case(
        "reward-nan",
        f"train {TINY} --reward_funcs tests.test_bad_input:nan_reward",
        "reward function 'nan_reward' returned nan",
        slow=True,
    ),
    case(
        "reward-wrong-length",
        f"train {TINY} --reward_funcs tests.test_bad_input:short_reward",
        "reward function 'short_reward' returned 1 values for 4 completions",
        slow=True,
    ),
    case(
        "reward-hangs",
        f"train {TINY} --reward_funcs tests.test_bad_input:hanging_reward --reward_timeout 2",
        "reward function 'hanging_reward' ran longer than reward_timeout (2 s)",
        slow=True,
    ),
    case(
        "disk-full", f"train {TINY}", "cannot write to run (File too large)", slow=True, file_size_limit=4096
    ),
]


def _snapshot(folder: Path) -> dict[str, str]:
    """Every path under ``folder`` with a hash of its content (folders hash as 'dir')."""
    return {
        str(path.relative_to(folder)): "dir"
        if path.is_dir()
        else hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
    }


def _make_files(folder: Path, files: dict[str, str | bytes]) -> None:
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


def _limits(file_size_limit: int | None):
    if file_size_limit is None:
        return None

    def apply() -> None:  # runs in the child before exec
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # so a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    return apply


def run_case(item: Case, folder: Path, model_dir: Path | None = None) -> subprocess.CompletedProcess:
    _make_files(folder, item.files)
    argv = [arg.replace("{model}", str(model_dir)) for arg in item.argv]
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    return subprocess.run(
        [sys.executable, "-m", "grpolab", *argv],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
        preexec_fn=_limits(item.file_size_limit),
    )


def check(
    item: Case, result: subprocess.CompletedProcess, before: dict[str, str], after: dict[str, str]
) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(f"grpolab {item.argv[0]}")]
    assert result.returncode == item.code, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr[-3000:]
    assert item.fragment in errors[0]
    if not item.slow:  # a run on a model also logs progress to stderr; a refusal says nothing else
        assert lines == errors
    assert after == before  # nothing half-written, nothing of the user's changed


FAST = [item for item in CASES if not item.slow]
SLOW = [item for item in CASES if item.slow]


def test_the_table_holds_forty_cases():
    assert len(CASES) >= 40 and len({item.id for item in CASES}) == len(CASES)


def _run_in_folder(item: Case, folder: Path, model_dir: Path | None = None):
    folder.mkdir()
    _make_files(folder, item.files)
    before = _snapshot(folder)
    result = run_case(item, folder, model_dir)
    return result, before, _snapshot(folder)


@pytest.fixture(scope="module")
def fast_results(tmp_path_factory, request):
    """The selected fast cases, run four at a time: each mostly waits on imports; 40 in a row take minutes."""
    from concurrent.futures import ThreadPoolExecutor

    selected = [
        test.callspec.params["item"]
        for test in request.session.items
        if getattr(test, "originalname", "") == "test_bad_input_is_one_line"
    ]
    root = tmp_path_factory.mktemp("bad-input")
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {item.id: pool.submit(_run_in_folder, item, root / item.id) for item in selected}
    return {name: future.result() for name, future in futures.items()}


@pytest.mark.slow
@pytest.mark.parametrize("item", FAST, ids=[item.id for item in FAST])
def test_bad_input_is_one_line(fast_results, item):
    check(item, *fast_results[item.id])


@pytest.mark.slow
@pytest.mark.parametrize("item", SLOW, ids=[item.id for item in SLOW])
def test_bad_input_in_a_real_run_is_one_line(tmp_path, item, tiny_model_dir):
    check(item, *_run_in_folder(item, tmp_path / "case", tiny_model_dir))
