"""Timing only (untrained default preset, confidence selection, `real` clips repeated to batch 64): RTFx of
graph decoding for several (K, S) next to Whisper-tiny.en, interleaved repeats."""
import functools, json, math, os, sys, torch
sys.path.insert(0, os.getcwd())
import data, decode, whisfusion as W, whisper
from tools.bench import time_interleaved, spread
dev = "cuda" if torch.cuda.is_available() else "cpu"
preset = sys.argv[1] if len(sys.argv) > 1 else "default"
torch.manual_seed(0)
model = W.build_model(W.WhisfusionConfig.from_dict(W.PRESETS[preset].to_dict())).to(dev)
W.merge_lora(model); model.eval()
wmodel = data.load_whisper("tiny.en", dev)
audios = [data.load_audio(u.audio) for u in data.load_split("real")]
bs = int(os.environ.get("BS", "64"))
batch = (audios * math.ceil(bs / len(audios)))[:bs]
secs = sum(len(a) for a in batch) / data.SAMPLE_RATE
def mels(b):
    return torch.stack([whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(a).to(dev))) for a in b])
wopts = whisper.DecodingOptions(language="en", without_timestamps=True, fp16=dev == "cuda")
systems = {"whisper": lambda: whisper.decode(wmodel, mels(batch), wopts)}
for k, s in [(15, 4), (15, 8), (8, 8), (10, 6), (5, 8)]:
    o = decode.DecodeOptions(candidates=k, steps=s, select="confidence", cuda_graph=dev == "cuda")
    g = decode.GraphedPDD(model, o) if dev == "cuda" else None
    systems[f"K={k} S={s}"] = functools.partial(lambda o, g: decode.decode_batch(model, mels(batch), decode.frame_counts(batch), o, g), o, g)
ms = time_interleaved(systems, dev, int(os.environ.get("REPS", "5")))
rtfx = {n: [1000 * secs / t for t in v] for n, v in ms.items()}
out = {n: dict(rtfx=spread(r), ratio=spread([a / b for a, b in zip(r, rtfx["whisper"])])) for n, r in rtfx.items()}
card = torch.cuda.get_device_name() if dev == "cuda" else "cpu"
print(f"RTFx at batch {bs} ({secs:.1f} s of `real` audio) on {card}: median [min-max], ratio to Whisper-tiny.en per repeat")
for n, v in out.items():
    print(f"  {n:12s} {v['rtfx']['median']:8.0f} [{v['rtfx']['min']:.0f}-{v['rtfx']['max']:.0f}]  {v['ratio']['median']:.2f}x [{v['ratio']['min']:.2f}-{v['ratio']['max']:.2f}]")
json.dump(dict(card=card, batch=bs, audio_seconds=secs, results=out), open(os.environ.get("OUT", "/tmp") + "/bench_ks.json", "w"), indent=1)
