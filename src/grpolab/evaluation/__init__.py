"""Evaluation: run a model over a task's items, score with the task's scorer, report and compare.

``runner`` (the pipeline), ``metrics`` (accuracy, pass@k, intervals, paired tests), ``stats`` (the
interval and test formulas), ``samples`` (the resumable samples file), ``report`` (tables, markdown,
charts) and ``probe`` (the pre-training learnability probe).
"""
