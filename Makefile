# The commands of the README (run, test; test-fast while working). Each builds .venv by itself on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The dashboard's charting library, fetched from the npm registry (not committed): see src/matchbox/web/vendor.py
VENDORED := src/matchbox/web/static/vendor/lightweight-charts.standalone.production.js
CHROMIUM := /usr/bin/chromium

.PHONY: run test test-fast lint bench clean chromium

run: $(STAMP) $(VENDORED)
	$(BIN)/matchbox up --demo

test: $(STAMP) $(VENDORED) chromium lint
	$(BIN)/pytest

# While working: the lint steps and every test but the e2e suites (processes, the browser,
# schemathesis, deployment, chaos, failover, outages, PostgreSQL), property suites on a few
# examples. Well under a minute; `make test` (what CI runs) runs everything.
test-fast: $(STAMP) $(VENDORED) lint
	$(BIN)/pytest -q -m "not e2e" --hypothesis-profile=fast

lint: $(STAMP)
	$(BIN)/ruff check src tests examples
	$(BIN)/ruff format --check src tests examples
	$(BIN)/mypy
	$(BIN)/vulture

bench: $(STAMP)
	$(BIN)/matchbox bench engine

$(STAMP): pyproject.toml src/matchbox/web/vendor.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m matchbox.web.vendor
	touch $(STAMP)

# Present after the install stamp; this brings it back if the folder was cleaned. Touched so a
# newer vendor.py with the same pin does not run it again on every make.
$(VENDORED): src/matchbox/web/vendor.py | $(STAMP)
	$(BIN)/python -m matchbox.web.vendor
	touch $@

# The browser test drives Debian's chromium (Playwright with the system browser, never a
# downloaded one). Quick when it is there; apt-get update only if the first install fails.
chromium:
	@if [ ! -x $(CHROMIUM) ]; then \
		if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
			echo "installing Debian's chromium for the browser test"; \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium \
			|| { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }; \
		else \
			echo "note: no $(CHROMIUM): the browser test is skipped (and fails with CI=true);" \
				"install Debian's chromium as root (apt-get install chromium) to run it"; \
		fi; \
	fi

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
