# pybuild: `make demo` and `make test` on a fresh Debian machine, as root.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PYBUILD := $(VENV)/bin/pybuild
APT_PACKAGES := busybox-static runc skopeo umoci docker.io docker-registry iptables nftables openssh-client \
	iproute2 uidmap ca-certificates git python3-venv tini libseccomp2 gcc libc6-dev \
	docker-compose etcd-server etcd-client qemu-user-static fuse-overlayfs slirp4netns \
	libcap2-bin podman buildah
DEMO_ROOT ?= /tmp/pybuild-demo

.PHONY: install apt venv compile demo test bench lint clean golden

ARM64_BUSYBOX := testdata/arm64/busybox

install: apt venv $(ARM64_BUSYBOX)

apt:
	@if [ "$$(id -u)" = 0 ]; then \
	  missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then \
	    echo "apt-get install:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  fi; \
	else echo "not root: skipping apt packages ($(APT_PACKAGES))"; fi

# an offline arm64 base for the multi-platform tests: Debian's busybox-static for arm64 (the
# binary only; tests import it with `pybuild import --platform linux/arm64`)
$(ARM64_BUSYBOX):
	@if [ "$$(id -u)" = 0 ]; then \
	  dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64; \
	  tmp=$$(mktemp -d) && chmod 755 $$tmp && cd $$tmp && \
	  { apt-get download -qq busybox-static:arm64 2>/dev/null || \
	    { apt-get update -qq && apt-get download -qq busybox-static:arm64; }; } && \
	  dpkg-deb -x busybox-static_*_arm64.deb x && cd - >/dev/null && mkdir -p $(@D) && \
	  cp $$tmp/x/bin/busybox $@ && rm -rf $$tmp; \
	else echo "not root: skipping the arm64 busybox"; fi

venv: $(VENV)/.installed

# editable_mode=compat: a plain .pth path entry, not an import-hook finder (~10 ms less start-up
# for every command)
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]' --config-settings editable_mode=compat
	touch $@

# byte-compile as `pip install` leaves a package: this machine exports PYTHONDONTWRITEBYTECODE=1,
# under which every command would compile the whole package from source again
compile: venv
	$(PY) -m compileall -q builder registry grammar

demo: install compile
	PYBUILD_ROOT=$(DEMO_ROOT) bash testdata/demo.sh $(PYBUILD)

test: install
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

bench: install compile
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# regenerate the Dockerfile golden files; review the diff before committing
golden: venv
	$(PY) tests/builder/test_dockerfile_golden.py --regen

lint: venv
	$(VENV)/bin/ruff check grammar registry builder tests bench
	$(VENV)/bin/mypy registry builder bench

clean:
	rm -rf $(VENV) build *.egg-info
