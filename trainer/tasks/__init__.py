"""Tasks: a model, its objective, its data and its evaluators behind one training_step (registered in TASKS)."""
