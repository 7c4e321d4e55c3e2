# Two commands on a fresh machine (Python 3.11+, Java 17, Maven): `make demo`, `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
# Two pytest-xdist workers, one test file each at a time: most tests wait on Kafka, so two cores
# run two files at once (11 min instead of 16). Each worker starts its own broker. 0 = one process.
TEST_WORKERS ?= 2
DEMO_ARGS ?=

.PHONY: setup demo test test-unit test-integration lint format bench clean kafka-start kafka-stop

setup: $(STAMP)

$(STAMP): pyproject.toml
	@# Debian tools the tests use (promtool, headless Chromium + chromedriver for the console's browser
	@# test); installed only when we are root and they are missing.
	@if ! command -v promtool >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; fi
	@if ! command -v chromedriver >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver; fi
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed, found " + sys.version' 
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	@# The benchmarks' peer (Roboflow trackers) without the opencv-python it would add beside the headless one.
	$(BIN)/pip install --quiet --no-deps trackers==2.6.1 supervision==0.31.2
	$(BIN)/pip install --quiet scipy "pydeprecate>=0.9,<0.14" requests pillow tqdm defusedxml
	touch $(STAMP)

demo: setup
	$(BIN)/its demo $(DEMO_ARGS)

test: setup
	$(BIN)/ruff check .
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-unit: setup
	$(BIN)/pytest -m unit $(PYTEST_ARGS)

test-integration: setup
	$(BIN)/pytest -m integration $(PYTEST_ARGS)

bench: setup
	$(BIN)/pytest -m bench -s $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

kafka-start: setup
	$(BIN)/its kafka start

kafka-stop: setup
	$(BIN)/its kafka stop

clean:
	-$(BIN)/its kafka stop
	rm -rf .its .pytest_cache .ruff_cache
