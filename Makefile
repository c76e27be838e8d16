# The README's commands. Everything installs into .venv; nothing is installed globally
# except Debian packages, through .ci/install-system-packages (root).
PY := .venv/bin/python
PIP := .venv/bin/pip
STAMP := .venv/.installed
LOCALES := $(wildcard */locale imaging/*/locale consults/*/locale)

.PHONY: run test test-unit lint messages install system-packages bench

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

messages: $(STAMP)
	@for d in $(LOCALES); do .venv/bin/pybabel -q compile -D django -d $$d --use-fuzzy || exit 1; done

system-packages:
	@if [ "$$(id -u)" = 0 ]; then bash .ci/install-system-packages; else sudo bash .ci/install-system-packages; fi

# The demo's alliance starts without the second-factor requirement (alliance/settings.py).
run: export OTP_REQUIRED_DEFAULT = 0
run: install messages
	$(PY) manage.py migrate --noinput -v0
	$(PY) manage.py collectstatic --noinput -v0
	$(PY) manage.py seed_demo
	$(PY) manage.py run_embedded

test: install messages
	bash .ci/test

# The tests that start no outside process (dcmtk, a server, a worker, Chromium, pdftotext):
# everything not marked integration, on PostgreSQL as `make test` uses it.
test-unit: install messages
	bash .ci/test -m "not integration"

lint: install
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy alliance imaging consults referrals demo
	.venv/bin/lint-imports

bench: install
	bash bench/run-all
