"""Training: GRPO (``grpo``) and the supervised warm-up (``sft``) through TRL, and what they need.

``args`` (grpolab's own fields) and ``recipes`` (YAML + TrlParser) make the config; ``checks`` validates a
run before weights load; ``plan`` prints the dry run; ``rewards`` selects and guards the task's reward
functions; ``callbacks`` writes metrics and curves; ``checkpoints`` keeps resume safe; ``distributed``
relaunches under accelerate; ``quantization`` holds the bitsandbytes and Unsloth paths; ``fast_grpo`` is
the CPU log-prob override of GRPOTrainer.
"""
