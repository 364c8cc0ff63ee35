# Two commands do everything on a fresh machine:
#   make demo   - create .venv, install, run the built-in default sweep, print Table 3
#   make test   - create .venv if needed, run the test suite (what .ci/run runs)
SHELL   := /bin/bash
PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
SHARED  ?= ../shared
STAMP   := $(VENV)/.installed
# Offline by default (the local copies under data/ and models/); HUB=1 goes to the Hugging Face Hub
# for models and datasets, e.g. `make table3 HUB=1 ARGS="model=llama_7b device=cuda"`.
HUB ?= 0
ifeq ($(HUB),1)
export HF_HUB_OFFLINE := 0
export HF_DATASETS_OFFLINE := 0
else
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
endif
export TOKENIZERS_PARALLELISM := false

.PHONY: install data model tex demo findings test test-fast test-durations table3 table5 table2 table4 table6 table7 table2-high-cost \
        table3-trained table4-trained table5-trained bench bench-kernels bench-train show-env clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(STAMP)

# Offline data: link the shared copies into the data root under their standard names.
data:
	@mkdir -p data
	@for d in wikitext-2-raw wikitext-2-tokens squad-v1.1; do \
	  if [ ! -e data/$$d ] && [ -d $(SHARED)/data/$$d ]; then ln -s "$$(cd $(SHARED)/data/$$d && pwd)" data/$$d; fi; \
	done

# The default model: the shared trained tiny Llama, or one trained here from local text; and the
# shared fine-tuned MiniLM teacher of squad_dev_split (without it, encoder runs fine-tune their own).
model: install data
	@mkdir -p models
	@if [ ! -e models/tiny-llama-wt2 ]; then \
	  if [ -d $(SHARED)/models/tiny-llama-wt2 ]; then \
	    ln -s "$$(cd $(SHARED)/models/tiny-llama-wt2 && pwd)" models/tiny-llama-wt2; \
	  else $(PY) scripts/train_tiny.py; fi; \
	fi
	@if [ ! -e models/$(MINILM_FT) ] && [ -d $(SHARED)/models/$(MINILM_FT) ]; then \
	  ln -s "$$(cd $(SHARED)/models/$(MINILM_FT) && pwd)" models/$(MINILM_FT); fi

demo: model
	$(PY) scripts/run.py +sweep=demo
	$(PY) scripts/tables.py print=true tables=[table3]

table3: model
	$(PY) scripts/run.py +sweep=table3 $(ARGS)
	$(PY) scripts/run.py +sweep=table3_owl $(ARGS)
	$(PY) scripts/run.py +sweep=table3_structured $(ARGS)
	$(PY) scripts/tables.py print=true tables=[table3]

# Table 3's training-based rows (SIMPLE, ZipLM) on the tiny Llama, trained on the WikiText-2 valid text.
table3-trained: model
	$(PY) scripts/run.py +sweep=table3_trained $(TRAINED) $(ARGS)
	$(PY) scripts/tables.py print=true tables=[table3]

# Table 5's fine-tuned rows (PEQA, QLoRA) and RPTQ on the tiny Llama, trained on the WikiText-2 valid text.
table5-trained: model
	$(PY) scripts/run.py +sweep=table5_trained $(TRAINED) $(ARGS)
	$(PY) scripts/tables.py print=true tables=[table5]

table5: model
	$(PY) scripts/run.py +sweep=table5 $(ARGS)
	$(PY) scripts/run.py +sweep=table5_w8a8 $(ARGS)
	$(PY) scripts/tables.py print=true tables=[table5]

# Offline encoder tables on the MiniLM, squad_dev_split variant (the published rows under
# results/minilm-l6/), with the shared fine-tuned teacher when it is linked (`make model`); its
# recipe is the finetune settings below. With the Hub: ENCODER=model=bert_base task=squad (or mnli, qqp).
# The offline settings score the first 1,000 of the variant's 5,173 questions: partial records, so
# the tables below show them with include_partial=true, marked.
MINILM_FT := minilm-l6-squad-dev-split
FINETUNED = $(if $(wildcard models/$(MINILM_FT)/config.json),model.finetuned=models/$(MINILM_FT),)
ENCODER ?= model=minilm task=squad_dev_split paths.results=results/minilm-l6 finetune.epochs=1 \
           finetune.lr=1e-4 task.max_length=192 task.doc_stride=64 task.max_eval_examples=1000 $(FINETUNED)

table2: model
	$(PY) scripts/run.py +sweep=table2 $(ENCODER) $(ARGS)
	$(PY) scripts/run.py method=kwon method.flops_rate=0.75 $(ENCODER) $(ARGS)
	$(PY) scripts/run.py method=kprune method.flops_rate=0.75 $(ENCODER) $(ARGS)
	$(PY) scripts/tables.py print=true tables=[table2] include_partial=true $(filter paths.results=%,$(ENCODER))

# Table 2's high-cost rows (pruning while fine-tuning) on the same offline MiniLM settings, with the
# published CPU recipe (conf/train/cpu_short.yaml).
table2-high-cost: model
	$(PY) scripts/run.py +sweep=table2_high_cost $(ENCODER) $(TRAINED) $(ARGS)
	$(PY) scripts/tables.py print=true tables=[table2] include_partial=true $(filter paths.results=%,$(ENCODER))

# Table 4's quantization-aware rows (Q8BERT, TernaryBERT) and their post-training baselines.
table4-trained: model
	$(PY) scripts/run.py +sweep=table4_trained $(ENCODER) $(TRAINED) $(ARGS)
	$(PY) scripts/tables.py print=true tables=[table4] include_partial=true $(filter paths.results=%,$(ENCODER))

table4: model
	$(PY) scripts/run.py +sweep=table4 $(ENCODER) $(ARGS)
	$(PY) scripts/run.py method=q8bert method.abits=16 $(ENCODER) $(ARGS)
	$(PY) scripts/tables.py print=true tables=[table4] include_partial=true $(filter paths.results=%,$(ENCODER))

# Tables 6 and 7 on the same offline MiniLM settings, trained with the published CPU recipe
# (conf/train/cpu_short.yaml: 100 steps of 16 windows); adaptors at LoRA's learning rate.
TRAINED ?= train=cpu_short
table6: model
	$(PY) scripts/run.py +sweep=table6 $(ENCODER) $(TRAINED) $(ARGS)
	$(PY) scripts/tables.py print=true tables=[table6] include_partial=true $(filter paths.results=%,$(ENCODER))

table7: model
	$(PY) scripts/run.py +sweep=table7 method=svd,fwsvd,noach,flop,flop_98 $(ENCODER) $(TRAINED) $(ARGS)
	$(PY) scripts/run.py +sweep=table7 method=lora,adalora $(ENCODER) $(TRAINED) train.lr=5e-4 $(ARGS)
	$(PY) scripts/tables.py print=true tables=[table7] include_partial=true $(filter paths.results=%,$(ENCODER))

# The tiers (tests/conftest.py): `test-fast` is the unit tier (no model through the pipeline; 109 s,
# the goal is 3 minutes); `test` is every tier, e2e and claims included (702 s from a fresh clone
# on 2 idle cores on xdist workers; the goal is 12 minutes; CI runs it).
# Both print the wall time and the 15 slowest tests; ARGS passes pytest options (e.g. ARGS="-m claims").
# The workers take whole modules, longest first (tests/durations.json, which test-durations rewrites).
PYTEST = start=$$(date +%s); $(PY) -m pytest -q -n auto --dist loadfile --no-loadscope-reorder --durations=15 \
	$(1) $(ARGS); rc=$$?; echo "wall time: $$(( $$(date +%s) - start )) s"; exit $$rc

# pdflatex, with which the tests typeset every published table (tests/test_latex.py): the Debian
# packages where it is missing (as root, or with sudo where that works without a password)
TEX_PACKAGES := texlive-latex-base texlive-latex-recommended poppler-utils
tex:
	@command -v pdflatex >/dev/null && command -v pdftoppm >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo "sudo -n" ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	    --no-install-recommends $(TEX_PACKAGES) >/dev/null; }

test: model tex
	@$(call PYTEST,)

test-durations: model
	@$(call PYTEST,--record-durations)

test-fast: model tex
	@$(call PYTEST,-m "not e2e and not claims")

# The survey's conclusions checked on the published records (conf/claims/; docs/findings.md):
# findings.{csv,md,tex} beside each set's tables, cost plots beside its plots
findings: install
	$(PY) scripts/findings.py paths.results=results/tiny-llama-wt2 "include=[]" "tables=[table3,table5]"
	$(PY) scripts/findings.py paths.results=results/minilm-l6 "include=[]" include_partial=true \
	  "tables=[table2,table4,table6,table7]"

# what every target runs with (HUB=1: online)
show-env:
	@echo HF_HUB_OFFLINE=$$HF_HUB_OFFLINE HF_DATASETS_OFFLINE=$$HF_DATASETS_OFFLINE

bench: model
	$(PY) scripts/bench_speed.py

# The kernel benchmark on this machine (CPU: about 10 minutes on 2 cores) -> results/bench/kernels-cpu.json;
# on a GPU machine: scripts/bench_gpu.sh (kernels and the 7B-scale pipeline, under 10 minutes)
bench-kernels: model
	$(PY) scripts/bench_kernels.py $(ARGS)

bench-train: model
	$(PY) scripts/bench_train.py $(FINETUNED)

clean:
	rm -rf $(VENV) results/runs results/hydra
