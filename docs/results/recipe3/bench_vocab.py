"""Timing only: the default preset with untrained weights (LoRA merged), confidence selection, on the `real` split;
decode.py's --bench with the output layer cut to the ids of all 73k TinySpeech training sentences."""
import json, os, sys, torch
sys.path.insert(0, os.getcwd())
import data, decode, whisfusion as W
from tools.bench import bench
dev = "cuda" if torch.cuda.is_available() else "cpu"
preset = sys.argv[1] if len(sys.argv) > 1 else "default"
torch.manual_seed(0)
model = W.build_model(W.WhisfusionConfig.from_dict(W.PRESETS[preset].to_dict())).to(dev)
W.merge_lora(model); model.eval()
ids = json.load(open(".device/vocab_train_all.json"))
utts = data.load_split("real")
out = os.environ.get("OUT", "/tmp/bv")
os.makedirs(out, exist_ok=True)
reps = int(os.environ.get("REPS", "5")); bs = int(os.environ.get("BS", "64"))
bench(model, data.load_whisper("tiny.en", dev), utts, decode.DecodeOptions(select="confidence"), dev,
      f"{out}/bench_vocab.json", repeats=reps, batch_size=bs, vocab_ids=ids)
