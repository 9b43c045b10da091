# Shortcuts for developers; the README's two commands need none of this.
PY := .venv/bin/python

.PHONY: run test lint format bench migrations ci

run:
	python3 dev.py run

test:
	python3 dev.py test

lint:
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	DEBUG=true $(PY) manage.py makemigrations --check --dry-run

format:
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

migrations:
	DEBUG=true $(PY) manage.py makemigrations

bench:
	@for script in bench/*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

ci:
	bash .ci/run
