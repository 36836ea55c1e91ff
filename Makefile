# Two commands do all the set-up: `make run` and `make test` create .venv when missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.autolabel-installed
FRAME_RATE ?= 350

.PHONY: install run test lint format bench clean

install: $(STAMP)

# Reinstalled when the dependencies change: pyproject.toml has the ranges, constraints.txt
# the exact stack the tests run on. Ultralytics and rf-groundingdino pull opencv-python
# beside opencv-python-headless; both ship cv2, so keep only headless (the pinned one).
$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "autolabel needs Python >= 3.11"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt -e '.[dev,ray]'
	$(BIN)/python -m pip uninstall -y -q opencv-python || true
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-deps --force-reinstall \
		"$$(grep -o '^opencv-python-headless==[0-9.]*' constraints.txt)"
	touch $(STAMP)
	@echo "installed: the command is $(BIN)/autolabel; 'source $(BIN)/activate' puts autolabel (and hf) on PATH"

run: install
	$(BIN)/autolabel run --frame-rate $(FRAME_RATE)
	@echo "next: 'source $(BIN)/activate', then 'autolabel --help' (or run $(BIN)/autolabel directly)"

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install
	$(BIN)/python bench/throughput.py

clean:
	rm -rf dataset runs .pytest_cache
