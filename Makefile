# Every target creates .venv and installs what it needs, so each works on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[train,serve,dev,scale]"
	touch $(STAMP)

# Draw captchas, train on them, evaluate, read a few: the whole tool in a few minutes.
demo: $(STAMP)
	$(BIN)/python -m captcha_ocr synth demo/data --count 3000 --seed 1
	$(BIN)/python -m captcha_ocr train demo/data --out demo/runs --epochs 30 --seed 1
	$(BIN)/python -m captcha_ocr evaluate demo/runs/latest demo/runs/latest/val.csv --show 5
	$(BIN)/python -m captcha_ocr synth demo/new --count 5 --seed 99
	$(BIN)/python -m captcha_ocr predict demo/runs/latest demo/new

# The JavaScript reader's packages (js/), for its golden test; without npm that test skips.
# ONNXRUNTIME_NODE_INSTALL=skip: onnxruntime-node would otherwise fetch CUDA libraries.
JS_DEPS := js/node_modules/.package-lock.json

$(JS_DEPS): js/package.json js/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		ONNXRUNTIME_NODE_INSTALL=skip npm ci --prefix js --no-audit --no-fund --loglevel=error; \
	else \
		echo "note: npm not found; the JavaScript reader's test will skip (install Node.js 20.9+)"; \
	fi

# Tests run in parallel (pytest-xdist), one worker a core, at most 4: most of the time goes to
# tiny trainings in child processes whose start-up (importing TensorFlow) uses one core.
# Measured on 2 cores: 551 s in one process, 326 s in two.
test: $(STAMP) $(JS_DEPS)
	$(BIN)/ruff check src tests bench scripts js
	$(BIN)/python -m pytest -q --numprocesses auto --maxprocesses 4

lint: $(STAMP)
	$(BIN)/ruff check src tests bench scripts js
	$(BIN)/ruff format --check src tests bench scripts js

# The benchmarks behind bench/RESULTS.md (about an hour on 2 cores; needs ../shared/datasets).
bench: $(STAMP)
	$(BIN)/python bench/time_to_accuracy.py --reference-time-limit 2400
	$(BIN)/python bench/crossval.py
	$(BIN)/python bench/read_speed.py
	$(BIN)/python bench/serve_load.py --requests 20000 --mixed 0.1 --results bench/RESULTS.md

clean:
	rm -rf demo .pytest_cache .ruff_cache
