# envcal — two commands do everything on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo broker bench lint clean venv

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip setuptools wheel

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[test,bench,ui]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

# `make demo DEMO_ARGS="--headless --duration 60"` passes options through (envcal demo --help).
MOSQUITTO_APT := apt-get update && apt-get install -y mosquitto
demo: $(STAMP) broker
	$(BIN)/envcal demo $(DEMO_ARGS)

# a real Mosquitto broker: PATH or /usr/sbin; else apt-get as root or with passwordless sudo;
# else stop and print the exact command (no fallback to another broker)
broker:
	@if command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; then \
	  echo "broker: $$(command -v mosquitto || echo /usr/sbin/mosquitto)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "broker: installing mosquitto with apt-get"; \
	  sh -c '$(MOSQUITTO_APT)'; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null && command -v apt-get >/dev/null 2>&1; then \
	  echo "broker: installing mosquitto with sudo apt-get"; \
	  sudo -n sh -c '$(MOSQUITTO_APT)'; \
	else \
	  echo "mosquitto (the MQTT broker) is missing and cannot be installed from here. Run:"; \
	  echo "    sudo apt-get update && sudo apt-get install -y mosquitto"; \
	  echo "(other systems: brew install mosquitto / dnf install mosquitto), then: make demo"; \
	  exit 1; \
	fi
	@command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || \
	  { echo "mosquitto still not found after installing; run: sudo apt-get install -y mosquitto"; exit 1; }

audit: $(STAMP)
	$(BIN)/pip install -q -e '.[audit]'
	BIN=$(BIN) security/audit.sh

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis tests/artifacts
