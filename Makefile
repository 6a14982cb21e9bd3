# Two commands: `make run` serves the embedded default (SQLite, no Redis, no configuration) on
# http://localhost:8000; `make test` runs the whole suite. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	AUTHSVC_ENV=$${AUTHSVC_ENV:-development} $(BIN)/flask --app wsgi db upgrade
	AUTHSVC_ENV=$${AUTHSVC_ENV:-development} GUNICORN_BIND=$${GUNICORN_BIND:-127.0.0.1:8000} \
		$(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

test: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) instance .pytest_cache
