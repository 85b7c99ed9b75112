"""Training: argument dataclasses, the builders of a run, the Accelerate loop of the classifier, its checkpoints,
and the pre-training commands (masked LM on a task's text, character-level causal LM)."""
