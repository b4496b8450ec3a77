# The README's two commands: `make run` (set up, train the default offline experiment, test it) and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c

VENV := .venv
PY := $(VENV)/bin/python
LITLAB := $(VENV)/bin/litlab
RUN_CONFIG ?= configs/adder_transformer.yaml
RUN_LOG := runs/make-run.log

.PHONY: venv run test

# Creates or updates .venv: the pinned torch wheels first (pip takes them from this machine's disk), then litlab.
venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

# Train the Transformer adder (offline data, CPU is enough), then test its best checkpoint.
run: venv
	mkdir -p runs
	$(LITLAB) fit --config $(RUN_CONFIG) 2>&1 | tee $(RUN_LOG)
	$(LITLAB) test --ckpt_path "$$(sed -n 's/^best checkpoint: //p' $(RUN_LOG) | tail -n 1)"

test: venv
	$(PY) -m pytest
