import sys, zlib, lzma, bz2, gzip; sys.path.insert(0,"/work/main")
import tools.rdata as R
def inflate(block):
    t = block[4:5]
    if t == b"Z": return lzma.decompress(block[5:], format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}])
    if t == b"2": return bz2.decompress(block[5:])
    if t == b"0": return block[5:]
    return zlib.decompress(block[4:])
R._inflate = inflate
def load(d, names=None):
    from pathlib import Path
    d = Path(d); raw = (d/"Rdata.rdx").read_bytes()
    index = R.unserialize(gzip.decompress(raw) if raw[:2]==b"\x1f\x8b" else inflate(raw))
    blob = (d/"Rdata.rdb").read_bytes(); out = {}
    for name,(off,n) in index["variables"].items():
        if names and name not in names: continue
        try: out[name] = R.unserialize(inflate(blob[off:off+n]))
        except Exception as e: out[name] = e
    return out
