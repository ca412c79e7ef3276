"""Run from the repository root after `git show 16abae7:tools/tts.py > /tmp/bb/tts_old.py` and with
WHISFUSION_PIPER_PYTHON=$PWD/.tts/bin/python: `python docs/results/recipe5/buildbench.py old|new 400`.
Side by side on one machine: the same planned training items spoken by the old voices (one program start per
sentence, the old shares) and the new ones (long-lived festival/piper workers, the new shares)."""
import importlib.util, json, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, "/work/main")
import data
from tools import tinyspeech, tts as tts_new
spec = importlib.util.spec_from_file_location("tts_old", "/tmp/bb/tts_old.py")
tts_old = importlib.util.module_from_spec(spec); sys.modules["tts_old"] = tts_old; spec.loader.exec_module(tts_old)
which, n = sys.argv[1], int(sys.argv[2])
items = tinyspeech.plan_corpus(data.SIZES["default"], 0)["train"][:n]
mod = tts_old if which == "old" else tts_new
tinyspeech.tts = mod
voices = [v for v in mod.VOICES if mod.engine_available(v.engine)]
with tempfile.TemporaryDirectory() as tmp:
    t = time.time()
    utts = tinyspeech.synth_split("train", items, voices, Path(tmp), "bench", 0, 2)
    dt = time.time() - t
print(json.dumps(dict(code=which, utterances=len(utts), seconds=round(dt, 1), per_second=round(len(utts) / dt, 2),
                      audio_hours=round(sum(u.seconds for u in utts) / 3600, 3))))
