"""Shared fixtures: the embedded model (converted once per machine) and a tiny random model.

No test touches the network. The tiny model shares the embedded model's tokenizer (and so its chat
template) but has two layers of width 16, so training and generation mechanics run in seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared_data() -> Path:
    """The shared data (real GSM8K): $GRPOLAB_SHARED_DATA, else shared/data beside or inside the repo."""
    candidates = [Path(os.environ["GRPOLAB_SHARED_DATA"])] if os.environ.get("GRPOLAB_SHARED_DATA") else []
    candidates += [REPO.parent / "shared" / "data", REPO / "shared" / "data"]
    return next((path for path in candidates if path.is_dir()), candidates[0])


SHARED_DATA = _shared_data()

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session")
def embedded_model_dir() -> Path:
    """The converted embedded model (converted into the user's grpolab cache on first use)."""
    from grpolab import models

    return Path(models.resolve(models.DEFAULT_MODEL))


@pytest.fixture(scope="session")
def tokenizer(embedded_model_dir):
    from grpolab import models

    return models.load_tokenizer(str(embedded_model_dir))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer) -> Path:
    """A 2-layer random Llama with the embedded tokenizer, saved as a plain checkpoint."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    directory = tmp_path_factory.mktemp("tiny-model")
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture
def trained_run():
    """Makes a run directory as 'grpolab train' leaves it: LoRA adapter, grpolab_run.json, config.yaml."""

    def make(directory: Path, base_model: Path, max_completion_length: int | None = None) -> Path:
        import json

        import yaml
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM

        model = get_peft_model(
            AutoModelForCausalLM.from_pretrained(base_model),
            LoraConfig(r=2, target_modules=["q_proj", "v_proj"]),
        )
        model.save_pretrained(directory)
        (directory / "grpolab_run.json").write_text(
            json.dumps({"base_model": str(base_model), "task": "arith", "task_options": {"levels": "add-10"}})
        )
        config = {"task": "arith", "max_completion_length": max_completion_length, "learning_rate": 1e-5}
        (directory / "config.yaml").write_text(yaml.safe_dump(config))
        return directory

    return make
