# The two commands a new user needs: `make demo` and `make test`. Both set everything up first (cached):
# `setup` is what the demo needs; `setup-test` adds the headless browser that tests/test_report_browser.py uses.
SHELL := /bin/bash
LAKE ?= ./lake
PYTEST_ARGS ?=
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup setup-test demo test test-realdata clean-lake

setup:
	@bash scripts/setup_env.sh

setup-test:
	@bash scripts/setup_env.sh --with-browser

demo: setup
	.venv/bin/socialrec run --lake $(LAKE)

test: setup-test
	.venv/bin/python -m pytest -q $(PYTEST_ARGS)

# Long runs on ../shared/datasets (opt-in).
test-realdata: setup-test
	.venv/bin/python -m pytest -q -m realdata $(PYTEST_ARGS)

clean-lake:
	rm -rf $(LAKE)
