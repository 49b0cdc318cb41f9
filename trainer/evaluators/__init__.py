"""Evaluators (reset / process / compute), registered in EVALUATORS."""
