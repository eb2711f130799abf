# Every target installs first when needed, so on a fresh clone each is one command.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
SHARED ?= $(abspath ../shared)

.PHONY: install test lint bench bench-voc demo smoke clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	SPP_SHARED=$(SHARED) $(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check spp_detect tests benchmarks

bench: $(STAMP)
	SPP_SHARED=$(SHARED) $(BIN)/python benchmarks/run.py

# the paper's table on the real VOC 2007 images of ../shared (hours; resumable; run folders in ~/spp-bench-voc)
bench-voc: $(STAMP)
	SPP_SHARED=$(SHARED) $(BIN)/python benchmarks/bench_voc.py $(BENCH_VOC_ARGS)

demo: $(STAMP)
	$(BIN)/spp-detect run pipelines/demo.toml

smoke: $(STAMP)
	$(BIN)/spp-detect run pipelines/tiny.toml

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache runs
