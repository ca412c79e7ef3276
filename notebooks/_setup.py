"""Shared set-up of the six notebooks: `from _setup import *` at the top of each.

It puts the project's .py files on the path, fixes the seeds and the plot style, and gives the notebooks the
CPU-task model (TinySpeech `numbers`, the `cpu` preset and recipe, train.RECIPES["cpu"]; docs/results.md, "CPU
demo") that `make cpu-model` trains into checkpoints/cpu/ (`make demo` does too, then evaluates it). When those
checkpoints are missing, `cpu_model()` makes them with `make cpu-model` (about 10 minutes on 2 cores, once).
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import data  # noqa: E402
import decode  # noqa: E402
import train  # noqa: E402
import whisfusion as W  # noqa: E402

torch.manual_seed(0)
torch.set_num_threads(1)  # the cpu model's matrices are small: one thread is as fast, and much faster on a busy machine
plt.rcParams.update({"figure.dpi": 80, "figure.figsize": (9, 3)})
SIZE = "numbers"  # the CPU task's corpus
CKPT_DIR = Path(os.environ.get("WHISFUSION_CPU_CKPT", ROOT / "checkpoints" / "cpu"))  # what make cpu-model writes
tok = data.get_tokenizer()
MASK = W.DecoderConfig().mask_id


def cpu_checkpoint(stage: int) -> Path:
    """checkpoints/cpu/stage{N}.pt, made by `make cpu-model` first if it is missing."""
    path = CKPT_DIR / f"stage{stage}.pt"
    if not path.is_file():
        print(f"{path} is missing: running `make cpu-model` (the CPU task's corpus and stages 0-2, ~10 min) ...")
        subprocess.run(["make", "-C", str(ROOT), "cpu-model"], check=True)
    return path


def cpu_model(stage: int = 2):
    """The CPU-task model after a stage, in eval mode: stages 1-2 as decode.py loads them (stage 2's EMA weights);
    stage 0, which decode.py refuses to decode (its decoder has never heard audio), as it was saved."""
    if stage == 0:
        return W.load_model(cpu_checkpoint(0), "cpu")[0].eval()
    return decode.load_for_decoding(cpu_checkpoint(stage), "cpu")


def encode(model, audios):
    """Waveforms -> encoder features (N, Ta, d) and the frames that hold audio (N,)."""
    mel = torch.stack([data.log_mel(a) for a in audios])
    with torch.no_grad():
        feats = torch.cat([model.embed_audio(mel[i:i + 32]) for i in range(0, len(mel), 32)])
    return feats, decode.frame_counts(audios)


def split_batch(model, split: str = "test", n: int | None = None):
    """Utterances of a `numbers` split with their encoder features: utts, features (N, Ta, d), n_frames (N,)."""
    utts = data.load_split(split, SIZE)[:n]
    return (utts, *encode(model, [data.load_audio(u.audio) for u in utts]))


def show(ids) -> str:
    """A canvas as words: [M] for [MASK], <sot>, <eot>."""
    names = {MASK: "[M]", tok.eot: "<eot>", tok.sot: "<sot>"}
    return " ".join(names.get(int(i)) or tok.decode([int(i)]).strip() for i in ids)


def result(**numbers):
    """The number a notebook ends on, as one line that tests/test_notebooks.py reads and checks."""
    print("RESULT " + json.dumps(numbers))
