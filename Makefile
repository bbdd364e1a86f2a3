# One-command set-up on a fresh machine with Python 3.11: `make demo`, `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
OUT    ?= out

.PHONY: install demo test test-fast lint bench bench-real clean

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	# the CPU torch wheel first: a looser requirement would pull gigabytes of CUDA packages
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,torch]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/onnxprune prune examples/data/digits_cnn.onnx -o $(OUT)/digits_50.onnx \
		--sparsity 0.5 --importance wanda --calib examples/data/digits_calib.npz --data examples/data/digits_test.npz \
		--report $(OUT)/digits_50.json

test: install
	$(PY) -m pytest -n 2 -q

test-fast: install
	$(PY) -m pytest -n 2 -q -m "not slow"

lint: install
	$(VENV)/bin/ruff check onnxprune passes calibration tests examples bench

bench: install
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) bench/bench_sparsify.py --out bench/results
	$(PY) bench/bench_structured.py --out bench/results
	$(PY) bench/bench_lowrank.py --out bench/results
	$(PY) bench/bench_finetune.py --out bench/results
	$(PY) bench/bench_sequential.py --out bench/results
	$(PY) bench/bench_sensitivity.py --out bench/results

# trained models (PP-OCRv4, all-MiniLM-L6-v2, an MNIST CNN) on real data, pruned through the CLI
bench-real: install
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) bench/bench_real.py --out bench/results

clean:
	rm -rf $(VENV) $(OUT) build dist *.egg-info
