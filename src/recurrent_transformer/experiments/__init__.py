"""Experiments: the comparison of presets against baselines (plan, resume, workers, report), summaries of
several comparisons, and training-loss curves."""
