"""How often the GSM8K grader agrees with OpenAI's correctness labels on real model solutions.

``example_model_solutions.jsonl`` (from openai/grade-school-math) holds, for each of the 1,319 test
problems, four model solutions (6B and 175B GPT-3, finetuned or with a verifier), each ending in
``A: N`` and labelled ``is_correct`` by OpenAI. The grader's lenient verdict should match those labels.

The labels follow the final ``A:`` value almost verbatim, so a second check rewrites that final line in
the formats the strict grader accepts (``<answer>N</answer>``, ``\\boxed{N}``, ``#### N``, with a currency
sign and a unit word) and asks that the strict verdict still matches the label.

    python scripts/gsm8k_agreement.py [--data PATH] [--show N]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

from grpolab.tasks.gsm8k import score
from grpolab.tasks.gsm8k_answers import normalize_answer

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared/data/gsm8k/example_model_solutions.jsonl"
REFERENCE_MARKER = "A:"  # the reference solutions in this file end in "A: N" instead of "#### N"
# Final-line rewrites for the strict check; {value} is the model's final answer text after "A:".
REWRITES = {
    "answer tag": "<answer>{value}</answer>",
    "answer tag, dollars": "<think>done</think>\n<answer>${value} dollars.</answer>",
    "boxed": "The final answer is $\\boxed{{{value}}}$.",
    "hash": "#### {value}",
}


def graded_solutions(path: Path) -> Iterator[dict]:
    """One record per model solution: the problem, the model, OpenAI's label and the grader's verdict."""
    with path.open(encoding="utf-8") as handle:
        for index, line in enumerate(handle):
            problem = json.loads(line)
            gold = normalize_answer(problem["ground_truth"].rpartition(REFERENCE_MARKER)[2])
            for model, sample in problem.items():
                if isinstance(sample, dict):
                    verdict = score(sample["solution"], {"answer": gold})
                    yield {
                        "index": index,
                        "model": model,
                        "gold": gold,
                        "label": sample["is_correct"],
                        "lenient": verdict.lenient,
                        "parsed": verdict.parsed,
                        "solution": sample["solution"],
                    }


def rewritten(solution: str, template: str) -> str:
    """``solution`` with its final ``A: N`` line replaced by ``template``; unchanged if it has none."""
    head, marker, value = solution.rpartition("\n" + REFERENCE_MARKER)
    return head + "\n" + template.format(value=value.strip()) if marker else solution


def strict_agreement(records: list[dict], template: str) -> tuple[int, int]:
    """(agreeing, total) for the strict verdict once every final line is rewritten with ``template``."""
    verdicts = [
        score(rewritten(record["solution"], template), {"answer": record["gold"]}) for record in records
    ]
    return sum(
        verdict.solved == record["label"] for verdict, record in zip(verdicts, records, strict=True)
    ), len(records)


def agreement(records: list[dict]) -> tuple[int, int]:
    """(agreeing, total): how many lenient verdicts equal OpenAI's label."""
    return sum(record["lenient"] == record["label"] for record in records), len(records)


def report(records: list[dict], show: int) -> None:
    agree, total = agreement(records)
    disagreements = [record for record in records if record["lenient"] != record["label"]]
    false_positive = sum(record["lenient"] for record in disagreements)
    print(f"agreement: {agree}/{total} = {100 * agree / total:.2f}%")
    print(
        f"labelled correct: {sum(record['label'] for record in records)}; grader lenient-correct: "
        f"{sum(bool(record['lenient']) for record in records)}"
    )
    for name, template in REWRITES.items():
        agree_strict, _ = strict_agreement(records, template)
        print(
            f"strict agreement, final line as {name!r}: {agree_strict}/{total} = "
            f"{100 * agree_strict / total:.2f}%"
        )
    print(
        f"disagreements: {len(disagreements)} (grader says right, label says wrong: {false_positive}; "
        f"grader says wrong, label says right: {len(disagreements) - false_positive})"
    )
    for record in disagreements[:show]:
        tail = record["solution"][-200:].replace("\n", " | ")
        print(
            f"\n#{record['index']} {record['model']} label={record['label']} gold={record['gold']} "
            f"parsed={record['parsed']}\n  ...{tail}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="example_model_solutions.jsonl")
    parser.add_argument("--show", type=int, default=20, help="how many disagreements to print")
    args = parser.parse_args()
    if not args.data.is_file():
        raise SystemExit(f"error: {args.data} not found; pass --data path/to/example_model_solutions.jsonl")
    report(list(graded_solutions(args.data)), args.show)


if __name__ == "__main__":
    main()
