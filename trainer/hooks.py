"""Engine hooks (registered in HOOKS)."""
