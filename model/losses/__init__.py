"""Loss functions shared by tasks (no task, model or data imports)."""
