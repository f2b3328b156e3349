"""Generation: the settings every command samples with, and the engines that produce completions.

``settings`` (torch-free), ``hf`` (transformers ``generate``: a batch, or one streamed chat reply),
``continuous_batching`` (the decoder ``grpolab eval`` uses by default), ``vllm`` (vLLM in-process) and
``openai`` (an OpenAI-compatible server).
"""
