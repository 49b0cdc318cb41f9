"""Metrics shared by tasks: pure functions on score/label arrays (no task, model or data imports)."""
