# Two entry points: `make demo` and `make test`. Each creates .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench clean chromium

$(BIN)/headstart: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: $(BIN)/headstart
	$(BIN)/headstart demo

test: $(BIN)/headstart chromium
	$(BIN)/python -m pytest -q

# The report test renders report.html in headless Chromium; install it where apt-get can (root or sudo).
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] && echo "" || (command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null && echo sudo) || echo none ); \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$SUDO" != none ]; then \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null \
	      || echo "could not install chromium: the report rendering test will skip"; \
	  else echo "chromium missing and apt-get unusable here: the report rendering test will skip"; fi; }

clean:
	rm -rf $(VENV) .pytest_cache
