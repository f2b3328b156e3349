"""Run by tests/test_multiprocess.py under `accelerate launch`: train, then record this rank's LoRA
weights."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from transformers import TrainerCallback

from grpolab.training import recipes
from grpolab.training.grpo import build_trainer
from grpolab.training.run import close_process_group


class RecordLora(TrainerCallback):
    def __init__(self, out: Path) -> None:
        self.out = out

    def on_train_end(self, args, state, control, model=None, **kwargs):
        lora = {name: param.detach().double() for name, param in model.named_parameters() if "lora_" in name}
        summary = {
            "sum": sum(float(t.sum()) for t in lora.values()),
            "abs": sum(float(t.abs().sum()) for t in lora.values()),
            "count": len(lora),
            "global_step": state.global_step,
            "world_size": args.world_size,
        }
        rank = args.process_index
        (self.out / f"rank{rank}.json").write_text(json.dumps(summary))


if __name__ == "__main__":
    train_args, grpo_config, model_config = recipes.parse_train_args(sys.argv[1:])
    probe_dir = Path(grpo_config.output_dir).parent / "probe"
    probe_dir.mkdir(exist_ok=True)
    trainer = build_trainer(train_args, grpo_config, model_config, callbacks=[RecordLora(probe_dir)])
    trainer.train()
    close_process_group()
