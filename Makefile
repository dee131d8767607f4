# Two commands for users: `make lab` and `make test`. Both set up .venv idempotently first.
PYTHON ?= python3
VENV ?= .venv
# NPU users keep the torch their torch_npu needs:  make lab TORCH_PIN= VENV_FLAGS=--system-site-packages
TORCH_PIN ?= torch==2.13.0
VENV_FLAGS ?=
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ascend-nb-installed
LAB_PORT ?= 8888

.PHONY: setup model browser screenshots lab lint test test-all test-fast clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(if $(TORCH_PIN),$(PY) -m pip install --quiet "$(TORCH_PIN)")
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

model: setup
	$(VENV)/bin/ascend-nb fetch

# Debian's chromium, and a CJK font so Chinese (C-Eval, chat) renders instead of boxes.
browser:
	@{ command -v chromium >/dev/null 2>&1 && fc-list 2>/dev/null | grep -qi "Noto Sans CJK"; } || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium fonts-noto-cjk >/dev/null; }

# PNGs of the chat widget, the sweep figure, the environment table and the precision plots for the
# README (docs/images/), taken from JupyterLab in headless chromium; rerun when the UI changes.
screenshots: model browser
	$(PY) scripts/screenshots.py docs/images

lab: model
	$(VENV)/bin/jupyter lab notebooks/ --ip=127.0.0.1 --port=$(LAB_PORT) --no-browser \
	  $$( [ "$$(id -u)" = 0 ] && echo --allow-root ) --LabApp.news_url=None

lint: setup
	$(VENV)/bin/ruff check

# every test but the heavy tier (pyproject's markers): within 20 minutes on 2 cores, from an empty ASCEND_NB_HOME
test: lint model browser
	$(VENV)/bin/pytest -m "not heavy"

test-all: lint model browser
	$(VENV)/bin/pytest

test-fast: lint model
	$(VENV)/bin/pytest -m "not slow and not heavy"

clean:
	rm -rf $(VENV) tests/artifacts
