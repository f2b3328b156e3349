"""Training: GRPO (``grpo``) and the supervised warm-up (``sft``) through TRL, and what they need.

``args`` (grpolab's own fields) and ``recipes`` (YAML + TrlParser) make the config; ``checks`` validates a
run before weights load (and ``gpu_preflight`` what a GPU run needs); ``plan`` prints the dry run;
``model`` builds the policy as TRL receives it; ``run`` is what GRPO and SFT runs share (run directory,
resume, save); ``rewards`` selects and guards the task's reward functions; ``callbacks`` writes metrics and
curves; ``checkpoints`` keeps resume safe; ``distributed`` and ``multinode`` launch under accelerate;
``gpu_extras`` holds the bitsandbytes, vLLM and Unsloth one-line checks and the Unsloth loader;
``grpo_trainer`` holds the GRPOTrainer subclasses (CPU log-probs and generation, coupled to TRL's private
methods), the SFT subclasses are in ``sft``.
"""
