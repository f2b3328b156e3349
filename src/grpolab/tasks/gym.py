"""reasoning-gym datasets as grpolab tasks: ``--task reasoning_gym/NAME`` for any of its 100+ generators.

reasoning-gym (https://github.com/open-thought/reasoning-gym, Apache-2.0; ``pip install 'grpolab[gym]'``)
generates procedural problems, each with its own scorer ``score_answer(answer, entry) -> float in [0, 1]``.
grpolab uses that scorer as its single source of truth:

* the answer is the last ``<answer>...</answer>`` of the completion, read by reasoning-gym's own
  ``extract_answer``, and the prompt is its default system prompt, which asks for that format;
* ``partial`` is the score, ``solved`` (strict accuracy) is a score of exactly 1.0, ``format_ok`` means an
  answer tag was found. A completion without one gets what the dataset's scorer gives a missing answer:
  0 for most, a small floor for some (countdown: 0.01), never a solve. Only the last ``MAX_GRADED_CHARS``
  (10,000) characters are read, as in the other graders (reasoning-gym's tag regex is quadratic on long
  runs of unclosed ``<answer>`` openings: 43 s on 100 kB).
* A question typed in ``grpolab chat`` has no generated item, so there the reply is judged by exact match
  with the answer given by ``/answer``.

Items are rebuilt for scoring from (dataset, config, index), which each row stores: reasoning-gym
generates item ``index`` from ``seed + index``, and its scorers need the item's metadata (a grid, a graph),
which Arrow's column types would change. Some generators also depend on Python's hash seed
(polynomial_multiplication, isomorphic_strings, list_functions, ransom_note), so another process may
regenerate another item: each row therefore also keeps its item as JSON text (``rg_entry``), and scoring
uses the regenerated item only when its question is the row's, else the stored one. A row with neither
(a file from an older grpolab) whose question differs is refused in one line, never scored against
another item. Datasets whose items carry no answer (propositional_logic, boxnet, graph_color, ...) have no
reference reply, so ``grpolab sft`` refuses them.

Options (``--task_options``) are the dataset's own config fields (``size``, ``seed``, difficulty ranges);
grpolab's ``--num`` sets ``size`` and its seed sets ``seed`` unless given. The test split uses
``seed + TEST_SEED_OFFSET`` and leaves out any question that is also among the train items.
"""

from __future__ import annotations

import difflib
import functools
import json
from collections.abc import Mapping
from typing import Any

from grpolab.errors import UserError
from grpolab.tasks.base import (
    MAX_GRADED_CHARS,
    ChatSupport,
    Option,
    Task,
    Verdict,
    completion_text,
    verdicts,
)
from grpolab.tasks.jsonl import read_rows

PREFIX = "reasoning_gym/"
DEFAULT_SIZE = {"train": 1000, "test": 100}
TEST_SEED_OFFSET = 1_000_003  # far from any train seed a user picks by hand (0, 1, 42, ...)
_ROW_KEYS = ("question", "answer", "rg_dataset", "rg_config", "rg_index")
_ENTRY = "rg_entry"  # the item as JSON text: what scoring falls back to when regeneration differs


def _gym():
    try:
        import reasoning_gym
    except ImportError:
        raise UserError(
            "reasoning-gym tasks need the reasoning-gym package: pip install 'grpolab[gym]'"
        ) from None
    return reasoning_gym


def dataset_names() -> list[str]:
    from reasoning_gym.factory import DATASETS

    return sorted(DATASETS)


def check_name(name: str) -> None:
    """A UserError naming close matches when ``name`` is not a reasoning-gym dataset."""
    _gym()
    names = dataset_names()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=4, cutoff=0.5)
        hint = (
            f"did you mean {', '.join(PREFIX + c for c in close)}?"
            if close
            else f"{len(names)} datasets exist"
        )
        raise UserError(f"reasoning-gym has no dataset '{name}': {hint} (see reasoning_gym.factory.DATASETS)")


@functools.lru_cache(maxsize=32)
def generator(name: str, config_json: str):
    """The reasoning-gym dataset object for ``name`` and a JSON config (cached: scoring asks per item)."""
    config = json.loads(config_json)
    try:
        return _gym().create_dataset(name, **config)
    except TypeError as error:  # an unknown config field
        from reasoning_gym.factory import DATASETS

        fields = ", ".join(DATASETS[name][1].__dataclass_fields__)
        raise UserError(
            f"bad task_options for reasoning_gym/{name} ({error}); its fields are: {fields}"
        ) from None
    except (AssertionError, ValueError) as error:  # the config's own validate()
        raise UserError(f"bad task_options for reasoning_gym/{name}: {error}") from None


def _config_json(name: str, split: str, num: int | None, seed: int, options: Mapping[str, Any]) -> str:
    config = {**options, "size": int(num or options.get("size") or DEFAULT_SIZE.get(split, 100))}
    config["seed"] = int(options.get("seed", seed)) + (TEST_SEED_OFFSET if split == "test" else 0)
    return json.dumps(config, sort_keys=True)


def entry(row: Mapping[str, Any]) -> dict[str, Any]:
    """The reasoning-gym item a row stands for: regenerated from its dataset, config and index when that
    gives the row's question, else the item the row stored; a UserError when neither is there."""
    item = generator(row["rg_dataset"], row["rg_config"])[int(row["rg_index"])]
    if "question" not in row or item["question"] == row["question"]:
        return item
    if row.get(_ENTRY):
        return json.loads(row[_ENTRY])
    raise UserError(
        f"reasoning_gym/{row['rg_dataset']} item {row['rg_index']}: the question reasoning-gym regenerates "
        "differs from the row's (this generator depends on Python's hash seed) and the row stores no item: "
        "write the data file again with 'grpolab data reasoning_gym', which stores each item"
    )


def make_prompt(question: str) -> list[dict[str, str]]:
    from reasoning_gym.utils import SYSTEM_PROMPTS

    return [{"role": "system", "content": SYSTEM_PROMPTS["default"]}, {"role": "user", "content": question}]


def _row(
    name: str, config_json: str, index: int, item: Mapping[str, Any], stored: str | None
) -> dict[str, Any]:
    return {
        "prompt": make_prompt(item["question"]),
        "question": item["question"],
        "answer": str(item["answer"]),
        "label": name,
        "rg_dataset": name,
        "rg_config": config_json,
        "rg_index": index,
        _ENTRY: stored,
    }


def _stored(item: Mapping[str, Any]) -> str:
    return json.dumps(item, sort_keys=True, default=str)


def generate_rows(
    name: str, split: str, num: int | None, seed: int, options: Mapping[str, Any],
    train_num: int | None = None,
) -> list[dict]:
    """One split's rows; test rows whose question is among the ``train_num`` train questions (every one
    the train split holds: ``--num``, else the options' size, else 1,000) are left out."""
    if split != "test":
        return _rows(name, _config_json(name, split, num, seed, options))
    train = generator(name, _config_json(name, "train", train_num, seed, options))
    seen = {train[index]["question"] for index in range(len(train))}
    wanted = int(num or options.get("size") or DEFAULT_SIZE["test"])
    for factor in (1, 2, 4, 8):  # generate more items until enough of them are not train questions
        rows = [row for row in _rows(name, _config_json(name, split, wanted * factor, seed, options))
                if row["question"] not in seen]
        if len(rows) >= wanted:
            break
    return rows[:wanted]


def _rows(name: str, config_json: str) -> list[dict]:
    items = generator(name, config_json)
    return [
        _row(name, config_json, index, items[index], _stored(items[index])) for index in range(len(items))
    ]


def make_task(name: str) -> Task:
    """The grpolab Task for reasoning-gym dataset ``name`` (a UserError when package or name is missing)."""
    check_name(name)

    def load(
        split: str = "train",
        data_file: str | None = None,
        num: int | None = None,
        seed: int = 0,
        **options: Any,
    ):
        import datasets

        if data_file:
            rows = [
                row for row in read_rows(data_file, required=_ROW_KEYS)[0] if row.get("split", split) == split
            ]
            rows = [
                {
                    **_row(row["rg_dataset"], row["rg_config"], row["rg_index"], row, row.get(_ENTRY)),
                    "answer": str(row["answer"]),
                }
                for row in rows[:num]
            ]
        else:
            rows = generate_rows(name, split, num, seed, options)
        return datasets.Dataset.from_list(rows)

    def generate(
        num: int, seed: int = 0, split: str = "train", train_num: int | None = None, **options: Any
    ) -> list[dict[str, Any]]:
        rows = generate_rows(name, split, num, seed, options, train_num)
        return [{key: value for key, value in row.items() if key != "prompt"} for row in rows]

    def reference(row: Mapping[str, Any]) -> str:
        if entry(row)["answer"] is None:
            raise UserError(
                f"reasoning_gym/{name} items carry no answer (its scorer checks a reply instead), so there "
                "is no reference reply for grpolab sft: train it with grpolab train (GRPO) directly"
            )
        return f"<answer>{row['answer']}</answer>"

    return Task(
        name=PREFIX + name, load=load, prompt=make_prompt, score=score, rewards=REWARDS,
        default_rewards=("gym_score", "gym_format"), default_weights=(1.0, 0.2), options=_options(name),
        generate=generate, reference=reference,
        chat=ChatSupport(hint="type a question; give its answer with /answer TEXT to have the reply judged "
                         "(by exact match: reasoning-gym's scorer needs a generated item)"),
    )


def _options(name: str) -> dict[str, Option]:
    from reasoning_gym.factory import DATASETS

    fields = {
        field: Option(f"a field of reasoning-gym's {DATASETS[name][1].__name__}")
        for field in DATASETS[name][1].__dataclass_fields__
    }
    return {
        **fields,
        "size": Option("items to generate (grpolab's --num overrides it)"),
        "seed": Option("generator seed (default: grpolab's --seed); the test split adds TEST_SEED_OFFSET"),
    }


def score(text: str, row: Mapping[str, Any]) -> Verdict:
    """reasoning-gym's verdict on one completion (see the module docstring)."""
    from reasoning_gym.utils import extract_answer

    answer = extract_answer(text[-MAX_GRADED_CHARS:])
    if "rg_index" not in row:  # a question typed in chat: no generated item to hand the scorer
        return Verdict(
            solved=answer is not None and answer == str(row["answer"]).strip(),
            parsed=answer,
            partial=float(answer is not None and answer == str(row["answer"]).strip()),
            format_ok=answer is not None,
        )
    value = float(generator(row["rg_dataset"], row["rg_config"]).score_answer(answer, entry(row)))
    return Verdict(solved=value == 1.0, parsed=answer, partial=value, format_ok=answer is not None)


def gym_score(completions: list[Any], **kwargs: Any) -> list[float]:
    """reasoning-gym's score in [0, 1]: its own partial credit, 1.0 for a fully right answer."""
    return [verdict.partial for verdict in verdicts(score, completions, kwargs)]


def gym_format(completions: list[Any], **kwargs: Any) -> list[float]:
    """1.0 when the completion has an ``<answer>`` tag, right or wrong.

    Weighted 0.2 by default: enough to teach the tag the scorer reads, too little to pay for a wrong answer.
    """
    from reasoning_gym.utils import extract_answer

    texts = (completion_text(c)[-MAX_GRADED_CHARS:] for c in completions)
    return [1.0 if extract_answer(text) is not None else 0.0 for text in texts]


REWARDS = {reward.__name__: reward for reward in (gym_score, gym_format)}


class _AnyDataset(Task):
    """``grpolab data reasoning_gym --dataset NAME``: any dataset, its config from the other options."""

    def check_options(self, options: Mapping[str, Any]) -> None:
        if not options.get("dataset"):
            raise UserError("reasoning_gym needs --dataset NAME, e.g. --dataset leg_counting")


def _no_load(*args: Any, **kwargs: Any) -> Any:
    raise UserError(
        "name a reasoning-gym dataset: --task reasoning_gym/NAME, e.g. reasoning_gym/leg_counting"
    )


def any_dataset() -> Task:
    """A generator for every reasoning-gym dataset at once (``grpolab data``); training takes one by name."""

    def generate(
        num: int, seed: int = 0, split: str = "train", dataset: str = "", train_num: int | None = None,
        **config: Any,
    ) -> list[dict]:
        return make_task(dataset).generate(num, seed, split, train_num, **config)

    return _AnyDataset(
        name="reasoning_gym", load=_no_load, prompt=make_prompt, score=score, rewards=REWARDS,
        default_rewards=("gym_score", "gym_format"), default_weights=(1.0, 0.2), generate=generate,
        options={"dataset": Option("a reasoning-gym dataset name, e.g. leg_counting", required=True)},
    )
