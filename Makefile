# envcal — two commands do everything on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo broker testdeps demofonts bench lint clean venv

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip setuptools wheel

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[test,bench,ui]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP) broker testdeps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

# `make demo DEMO_ARGS="--headless --duration 60"` passes options through (envcal demo --help).
MOSQUITTO_APT := apt-get update && apt-get install -y mosquitto
demo: $(STAMP) broker demofonts
	$(BIN)/envcal demo $(DEMO_ARGS)

# the Chinese PDF report needs a CJK font (Noto Sans CJK SC); the demo runs without it
# (the Reports page then says the Chinese PDF cannot be made) when it cannot be installed
demofonts:
	@if [ -f /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "fonts: installing fonts-noto-cjk with apt-get"; \
	  sh -c 'apt-get update && apt-get install -y --no-install-recommends fonts-noto-cjk'; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null && command -v apt-get >/dev/null 2>&1; then \
	  echo "fonts: installing fonts-noto-cjk with sudo apt-get"; \
	  sudo -n sh -c 'apt-get update && apt-get install -y --no-install-recommends fonts-noto-cjk'; \
	else \
	  echo "note: no CJK font for the Chinese PDF report; install it with:"; \
	  echo "    sudo apt-get update && sudo apt-get install -y fonts-noto-cjk"; \
	fi

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

# what the browser test and the Chinese PDF need: Chromium (Playwright drives Debian's
# /usr/bin/chromium), a CJK font (Noto Sans CJK SC) and poppler (pdftotext); installed like
# mosquitto (apt-get as root or with passwordless sudo, else the exact command is printed)
TESTDEPS_PKGS := chromium chromium-driver fonts-noto-cjk fonts-droid-fallback poppler-utils
TESTDEPS_APT := apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(TESTDEPS_PKGS)
testdeps:
	@if [ -x /usr/bin/chromium ] && [ -f /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc ] \
	    && command -v pdftotext >/dev/null 2>&1; then \
	  echo "testdeps: chromium, Noto Sans CJK and pdftotext present"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "testdeps: installing $(TESTDEPS_PKGS) with apt-get"; \
	  sh -c '$(TESTDEPS_APT)'; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null && command -v apt-get >/dev/null 2>&1; then \
	  echo "testdeps: installing $(TESTDEPS_PKGS) with sudo apt-get"; \
	  sudo -n sh -c '$(TESTDEPS_APT)'; \
	else \
	  echo "the tests need Chromium, a CJK font and pdftotext, which cannot be installed from here. Run:"; \
	  echo "    sudo apt-get update && sudo apt-get install -y $(TESTDEPS_PKGS)"; \
	  echo "then: make test"; \
	  exit 1; \
	fi

audit: $(STAMP)
	$(BIN)/pip install -q -e '.[audit]'
	BIN=$(BIN) security/audit.sh

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis tests/artifacts
