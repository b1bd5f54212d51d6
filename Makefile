# osunits: `make demo` installs everything and compiles the bundled example; `make test` runs the suite.
PY       ?= /usr/bin/python3
VENV     ?= .venv
BIN      := $(VENV)/bin
HOST     ?= ctl01
EXAMPLE  := examples/openstack
OUT      := build/$(HOST)
APT_PKGS := python3-venv python3-dev gcc pkg-config libsystemd-dev systemd-container \
            debootstrap graphviz iproute2 nftables make
export DEBIAN_FRONTEND := noninteractive

.PHONY: deps system-deps demo test test-fast e2e bench lint clean

system-deps:
	@missing=$$(for p in $(APT_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing; fi

$(BIN)/osunits: pyproject.toml
	$(MAKE) system-deps
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[runtime,test]'
	touch $@

deps: system-deps $(BIN)/osunits

# The main job on the bundled example: compile ctl01, verify the units, show the graph.
demo: deps
	rm -rf $(OUT)
	$(BIN)/osunits secrets generate --deployment $(EXAMPLE)  # random passwords, made once
	$(BIN)/osunits generate --host $(HOST) --deployment $(EXAMPLE) --root $(OUT)
	cd $(OUT) && SYSTEMD_UNIT_PATH=$(CURDIR)/$(OUT)/etc/systemd/system: systemd-analyze verify \
	    openstack.target $$(cd etc/systemd/system && ls -d *.service.d | sed 's/\.d$$//')
	@echo "units for $(HOST) written under $(OUT)/ and verified by systemd-analyze"
	$(BIN)/osunits check-deps --deployment $(EXAMPLE)
	$(BIN)/osunits check-deps --deployment $(EXAMPLE) --format dot | dot -Tsvg -o build/graph.svg
	@echo "dependency graph: build/graph.svg"

test: deps
	$(BIN)/python -m pytest -q

test-fast: deps
	$(BIN)/python -m pytest -q -m 'not systemd and not e2e'

e2e: deps
	$(BIN)/python -m pytest -q -m e2e

bench: deps
	$(BIN)/python bench/run.py $$(bench/fetch_quadlet.sh | sed 's/^/--quadlet=/' || true)

lint: deps
	$(BIN)/ruff check osunits tests bench
	$(BIN)/python -m mypy

clean:
	rm -rf build
