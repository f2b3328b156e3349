"""grpolab eval: score a model or a trained adapter with the task's strict scorer; compare with another eval."""

from __future__ import annotations

import argparse
import json

from grpolab.errors import UserError

EXAMPLE = """examples:
  grpolab eval --num 100                               # the default model on 100 arith test items
  grpolab eval --adapter outputs/arith-smollm2         # a training run: its base model and task
  grpolab eval --adapter outputs/arith-smollm2 --compare outputs/eval-smollm2-135m-instruct-arith
  grpolab eval --task sudoku --data_file data/sudoku.jsonl --k 8 --temperature 0.7   # pass@1..pass@8
  grpolab eval --adapter outputs/run --resume          # continue an interrupted eval
  grpolab eval --backend openai --base_url http://127.0.0.1:8000/v1 --model NAME   # a served model

Writes metrics.json, samples.jsonl (every completion with its verdict), report.md and
accuracy_by_label.png to --out (default: ADAPTER/eval-SPLIT or outputs/eval-MODEL-TASK)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model name or path (default: the adapter's base model, else "
                        "smollm2-135m-instruct); with --backend openai the served name (default: the "
                        "server's only model)")
    parser.add_argument("--adapter", help="a training run directory (or any PEFT LoRA adapter directory)")
    parser.add_argument("--task", help="task name or package.module:TASK (default: the run's task, else arith)")
    parser.add_argument("--task_options", default="{}", help='task options as JSON, e.g. \'{"levels": "add-50"}\'')
    parser.add_argument("--data_file", help="JSONL file of items (default: the task's own data)")
    parser.add_argument("--split", default="test", help="data split to evaluate")
    parser.add_argument("--num", type=int, help="number of items (default: the task's default)")
    parser.add_argument("--batch_size", type=int, default=32,
                        help="sequences generated at once; prompts per batch = batch_size // k")
    parser.add_argument("--k", type=int, default=1, help="completions per item; k > 1 reports pass@k "
                        "and needs --temperature > 0")
    parser.add_argument("--temperature", type=float, default=0.0, help="sampling temperature; 0 is greedy")
    parser.add_argument("--top_p", type=float, default=1.0, help="nucleus sampling threshold when sampling")
    parser.add_argument("--max_new_tokens", type=int,
                        help="longest completion, in tokens (default: the run's max_completion_length for a "
                        "training run or a model merged from one, else 256)")
    parser.add_argument("--seed", type=int, default=0, help="seed for generated data and for sampling")
    parser.add_argument("--out", help="output directory (default: ADAPTER/eval-SPLIT or outputs/eval-MODEL-TASK)")
    parser.add_argument("--resume", action="store_true", help="skip items already in OUT/samples.jsonl")
    parser.add_argument("--compare", metavar="OTHER_EVAL_DIR",
                        help="an earlier eval output directory to put side by side with this one")
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--backend", choices=("transformers", "vllm", "openai"), default="transformers",
                        help="generation engine; vllm needs the 'vllm' extra (a GPU); openai sends the items "
                        "to an OpenAI-compatible server at --base_url")
    server = parser.add_argument_group("--backend openai")
    server.add_argument("--base_url", help="the server's OpenAI API root, e.g. http://127.0.0.1:8000/v1")
    server.add_argument("--api_key_env", default="OPENAI_API_KEY",
                        help="environment variable holding the API key, if the server needs one (only its "
                        "name is recorded)")
    server.add_argument("--concurrency", type=int, default=8, help="requests in flight at once")
    server.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for one reply")


def run(args: argparse.Namespace) -> int:
    from grpolab.evaluation import report, runner

    config = runner.EvalConfig(
        model=args.model, adapter=args.adapter, task=args.task, task_options=_json_options(args.task_options),
        data_file=args.data_file, split=args.split, num=args.num, seed=args.seed, k=args.k,
        temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size, backend=args.backend, base_url=args.base_url,
        api_key_env=args.api_key_env, concurrency=args.concurrency, timeout=args.timeout,
    )
    if args.compare:
        report.load_metrics(args.compare)  # fail before any generation, not after
    out, metrics = runner.evaluate(config, args.out, resume=args.resume, progress=not args.no_progress)
    print(report.result_table({metrics["name"]: metrics}))
    settings = metrics["config"]
    print(f"\nmax_new_tokens {settings['max_new_tokens']} ({settings['max_new_tokens_from']})")
    print(f"\nwrote {out}/metrics.json, samples.jsonl, report.md, accuracy_by_label.png")
    if args.compare:
        print("\n" + report.compare(args.compare, out, out))
        print(f"\nwrote {out}/comparison.md, comparison.png")
    return 0


def _json_options(text: str) -> dict:
    try:
        options = json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(f"--task_options is not valid JSON ({error.msg}): write it like '{{\"levels\": \"add-50\"}}'") from None
    if not isinstance(options, dict):
        raise UserError(f"--task_options must be a JSON object, got {type(options).__name__}")
    return options
