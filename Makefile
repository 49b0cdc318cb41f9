# Fresh-machine entry points. A CUDA user already has torch; elsewhere the CPU wheel is installed first.
PYTHON ?= python3
DEMO_DATA ?= data/synthetic

.PHONY: install demo test bench clean

install:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install "torch==2.13.0"
	$(PYTHON) -m pip install -q -e ".[dev]"

# Train the multi-scale model on the embedded synthetic dataset, then evaluate EgoMCQ.
demo: install
	$(PYTHON) run/demo.py --data $(DEMO_DATA)

test: install
	$(PYTHON) -m pytest -q tests

bench: install
	for b in benchmarks/bench_*.py; do $(PYTHON) $$b || exit 1; done

clean:
	rm -rf saved/ $(DEMO_DATA) .pytest_cache
