# `make test` and `make demo` are the README's quick start: both work on a fresh clone.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test test-slow lint demo peers clean

$(PY):
	python3 -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# Real SIP peers for the integration tests; only installable as root (CI, fresh machines).
# kamailio: the SIP load balancer of deploy/kamailio/, tested in front of two workers; the tests
# start their own, so the package's default service (a stock config on 5060) is switched off.
peers:
	@if ! command -v sipp >/dev/null 2>&1 || ! command -v baresip >/dev/null 2>&1 \
	    || ! { command -v kamailio || test -x /usr/sbin/kamailio; } >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sip-tester baresip kamailio >/dev/null; \
	    systemctl disable --now kamailio >/dev/null 2>&1 || true; \
	  else echo "sipp/baresip/kamailio missing and not root: their tests will be skipped"; fi; \
	fi

lint: $(STAMP)
	$(VENV)/bin/ruff check gateway tests bench
	$(VENV)/bin/mypy gateway

# Load runs (marked `slow`) depend on how busy the machine is: they are not part of `make test`.
test: $(STAMP) peers lint
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow"

test-slow: $(STAMP) peers
	$(PY) -m pytest -q -p no:cacheprovider -m slow

demo: $(STAMP)
	$(PY) -m gateway demo

clean:
	rm -rf $(VENV)
