# Two commands do all the set-up on a fresh machine (see README.md):
#   make demo   - create .venv, install gba_lens, reproduce the paper's synthetic table offline
#   make test   - create .venv, install gba_lens, run the test suite (notebooks included; a worker per core)
# The dev install pins torch==2.13.0 (a CPU wheel on the CI machine): a looser range would
# pull a multi-GB CUDA build. Users on Colab / GPU boxes just `pip install gba-lens`.
VENV ?= .venv
PY := $(VENV)/bin/python
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline WANDB_SILENT=true OMP_WAIT_POLICY=PASSIVE

.PHONY: setup demo test bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

setup: $(VENV)/.installed

DEMO_ARGS ?=
demo: setup
	$(OFFLINE) $(VENV)/bin/gba-lens recover --preset paper-toy --out runs/paper-toy $(DEMO_ARGS)

# The suite in parallel (pytest-xdist): one single-threaded worker per core, at most TEST_WORKERS; each
# test file on one worker, so that the two-process torchrun tests (test_distributed.py) run one at a time.
TEST_WORKERS ?= 4
test: setup
	$(OFFLINE) $(PY) -m pytest -q -n auto --maxprocesses $(TEST_WORKERS) --dist loadfile

bench: setup
	$(OFFLINE) $(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs
