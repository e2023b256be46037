# Two entry points: `make demo` and `make test`. Each creates .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench clean browser

$(BIN)/headstart: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: $(BIN)/headstart
	$(BIN)/headstart demo

test: $(BIN)/headstart browser
	$(BIN)/python -m pytest -q

# The report test renders report.html in headless Chromium, installed per user and never as root: Playwright's
# (the test extra's `playwright` downloads it under ~/.cache/ms-playwright; that needs the network), else a system
# chromium on PATH. With neither, that test skips and says why.
browser: $(BIN)/headstart
	@$(BIN)/python -m playwright install chromium >/dev/null 2>&1 && echo "report test: Playwright's Chromium" \
	  || { BROWSER=$$(command -v chromium || command -v chromium-browser || command -v google-chrome || true); \
	       if [ -n "$$BROWSER" ]; then echo "report test: Playwright could not download Chromium (offline?); using $$BROWSER"; \
	       else echo "report test: no Chromium (Playwright could not download one, none on PATH): it will skip"; fi; }

clean:
	rm -rf $(VENV) .pytest_cache
