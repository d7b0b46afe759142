# The two commands: `make run` and `make test`. Everything they need is set up here.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
WORKERS ?= 2

.PHONY: run test lint format bench setup clean browser nginx caddy oidc-provider axe screenshots faketime test-clock

$(VENV)/.run-installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[postgres]'
	touch $@

$(VENV)/.dev-installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.run-installed

setup: $(VENV)/.run-installed
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput --verbosity 0
	$(PY) manage.py ensure_admin

run: setup
	exec $(VENV)/bin/gunicorn portal.wsgi --bind $(HOST):$(PORT) --workers $(WORKERS) \
		--access-logfile - --forwarded-allow-ips '$(or $(FORWARDED_ALLOW_IPS),127.0.0.1)'

# Browser tests drive Chromium: $(CHROMIUM) if set, else Debian's or Ubuntu's package (installed with
# apt-get where there is one), else Playwright's own build. With none of them, stop and say so: the browser
# tests never skip quietly (tests/browser/conftest.py fails them in CI).
browser: $(VENV)/.dev-installed
	@if [ -n "$(CHROMIUM)" ] && [ -x "$(CHROMIUM)" ]; then exit 0; fi; \
	if [ -x /usr/bin/chromium ]; then exit 0; fi; \
	if command -v apt-get >/dev/null 2>&1 && apt-get update -qq \
		&& DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core; then exit 0; fi; \
	echo "No Debian Chromium here: installing Playwright's own Chromium instead."; \
	if $(PY) -m playwright install chromium; then exit 0; fi; \
	echo "make test: no Chromium for the browser tests. Install it (apt-get install chromium, or" \
		"$(PY) -m playwright install chromium), or set CHROMIUM=/path/to/chromium." >&2; \
	exit 1

# A server package the live tests start themselves, with their own generated config: installed with
# apt-get when missing, never started as the system service. A policy-rc.d that refuses (only while
# installing, when the machine has none) keeps the package from starting the service on port 80.
# $(1): the command and the package; $(2): what the tests use it for.
define install_server
	@if command -v $(1) >/dev/null 2>&1 || [ -x /usr/sbin/$(1) ]; then exit 0; fi; \
	if command -v apt-get >/dev/null 2>&1; then \
		ours=""; if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d \
			&& chmod 755 /usr/sbin/policy-rc.d && ours=1; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(1); status=$$?; \
		if [ -n "$$ours" ]; then rm -f /usr/sbin/policy-rc.d; fi; \
		if [ $$status = 0 ]; then exit 0; fi; \
	fi; \
	echo "make test: no $(1) for $(2). Install it (apt-get install $(1))." >&2; \
	exit 1
endef

# nginx in front of the portal (tests/live/test_gateway.py); Caddy's documented forward_auth block
# (tests/live/test_caddy.py).
nginx:
	$(call install_server,nginx,the gateway tests)

caddy:
	$(call install_server,caddy,the Caddy gateway test)

# The sign-in tests run a real OpenID Connect provider: the npm package oidc-provider (Node 20 or later),
# installed into an ignored folder and started by the tests themselves (tests/identity/provider.py).
OIDC_PROVIDER_VERSION := 9.13.3
OIDC_PROVIDER := .cache/npm/oidc-provider/node_modules/oidc-provider/package.json
oidc-provider: $(OIDC_PROVIDER)
$(OIDC_PROVIDER):
	@command -v npm >/dev/null 2>&1 || { echo "make test: no npm for the sign-in tests' OpenID provider." \
		"Install Node 20 or later (apt-get install nodejs npm)." >&2; exit 1; }
	npm install --prefix .cache/npm/oidc-provider --no-audit --no-fund --silent oidc-provider@$(OIDC_PROVIDER_VERSION)

# axe-core (npm) for the browser tests' accessibility checks, into an ignored folder: never the tree.
AXE := .cache/npm/axe/node_modules/axe-core/axe.min.js
axe: $(AXE)
$(AXE):
	@command -v npm >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && apt-get update -qq \
		&& DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm; } || { \
		echo "make test: no npm to install axe-core for the accessibility checks. Install npm." >&2; exit 1; }
	npm install --silent --no-audit --no-fund --prefix .cache/npm/axe axe-core@4

test: $(VENV)/.dev-installed browser nginx caddy oidc-provider axe
	$(PY) manage.py collectstatic --noinput --verbosity 0
	$(PY) -m pytest $(PYTEST_ARGS)

# The browser tests write their screenshots to build/screenshots/ (ignored); this refreshes the ones
# the README and docs/ show, on purpose.
screenshots: $(VENV)/.dev-installed browser axe oidc-provider
	SCREENSHOTS_DIR=docs/screenshots $(PY) -m pytest -q tests/browser

# libfaketime (Debian's faketime) sets the clock of the test process and the servers it starts.
faketime:
	@if command -v faketime >/dev/null 2>&1; then exit 0; fi; \
	if command -v apt-get >/dev/null 2>&1 && apt-get update -qq \
		&& DEBIAN_FRONTEND=noninteractive apt-get install -y -qq faketime; then exit 0; fi; \
	echo "make test-clock: no faketime. Install it (apt-get install faketime)." >&2; \
	exit 1

# The tests whose outcome could depend on the date or the time of day (marked `clock`), run with the
# clock set to awkward moments: seconds before midnight at the end of February, of a 31-day month and of
# the year, a leap day, and noon on the 31st. DONT_FAKE_MONOTONIC keeps timeouts and waits on the real
# clock (a faked monotonic clock makes Python's timed waits hang); Chromium crashes with libfaketime
# preloaded and gets the machine's own clock (tests/browser/conftest.py). Debian's libfaketime 0.9.10
# breaks time.sleep on Python 3.11 (OSError 22 from clock_nanosleep), which is why the tests that sleep
# (tests/live/, the send_alerts loop) are not among these.
CLOCK_MOMENTS := "2027-02-28 23:59:57" "2028-02-29 23:59:57" "2026-12-31 23:59:57" "2027-01-31 12:00:00"
test-clock: $(VENV)/.dev-installed browser axe faketime
	$(PY) manage.py collectstatic --noinput --verbosity 0
	@for moment in $(CLOCK_MOMENTS); do \
		echo "== make test-clock: the clock at $$moment UTC"; \
		TZ=UTC DONT_FAKE_MONOTONIC=1 faketime "$$moment" $(PY) -m pytest -q -p no:cacheprovider -m clock \
			$(PYTEST_ARGS) || exit 1; \
	done

# The habits a machine enforces; CI runs this first, and .pre-commit-config.yaml runs the same.
lint: $(VENV)/.dev-installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(PY) manage.py check --fail-level WARNING
	$(PY) manage.py makemigrations --check --dry-run

format: $(VENV)/.dev-installed
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(VENV)/.dev-installed
	bash bench/run

clean:
	rm -rf $(VENV) staticfiles
