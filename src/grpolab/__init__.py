"""grpolab: GRPO fine-tuning for tasks with checkable answers."""

__version__ = "0.1.0"
