"""A reader for R lazy-load databases (Rdata.rdx + Rdata.rdb): how the r-cran-janeaustenr package keeps its novels.

The .rdx index is one serialised R list whose `variables` entry maps each object name to (offset, length) in
the .rdb; each record there is a 4-byte big-endian length followed by a zlib stream holding one R object in XDR
serialisation. Only what janeaustenr stores is read: character vectors, lists, pairlists and symbols.
(PyPI's `rdata` reads whole .rda/.rds files: the index and its records would still be unwrapped by hand here,
and it brings pandas and xarray along for what is a list of strings.)
"""
import gzip
import struct
import zlib
from pathlib import Path

# R's SEXP type codes (R Internals, "Serialization formats")
NULL_AND_ENVS = (254, 242, 253, 251, 252, 250)  # NILVALUE, EMPTYENV, GLOBALENV, MISSINGARG, UNBOUNDVALUE, BASENAMESPACE
REFSXP, SYMSXP, LISTSXP, CHARSXP = 255, 1, 2, 9
INTS, REALSXP, LISTS = (10, 13), 14, (16, 19, 20)  # LGLSXP/INTSXP, REALSXP, STRSXP/VECSXP/EXPRSXP
HAS_ATTR, HAS_TAG = 1 << 9, 1 << 10  # flag bits after the type byte


def read_r_rdb(rdx: Path, rdb: Path) -> dict[str, list[str]]:
    """Every object of a lazy-load database by name (janeaustenr: one character vector of lines per novel)."""
    raw = rdx.read_bytes()
    index = unserialize(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else _inflate(raw))
    blob = rdb.read_bytes()
    return {name: unserialize(_inflate(blob[off:off + n])) for name, (off, n) in index["variables"].items()}


def _inflate(block: bytes) -> bytes:
    return zlib.decompress(block[4:])  # 4-byte big-endian length, then a zlib stream


def unserialize(buf: bytes):
    """One R object from its XDR serialisation ("X\\n", a version triple, [native encoding], the item)."""
    if buf[:2] != b"X\n":
        raise ValueError("not an R XDR serialization")
    reader = _Reader(buf, pos=2)
    version = [reader.i32() for _ in range(3)][0]
    if version == 3:
        n = reader.i32()  # the length of the native encoding's name, which is skipped
        reader.pos += n
    return reader.item()


class _Reader:
    def __init__(self, buf: bytes, pos: int):
        self.buf, self.pos, self.refs = buf, pos, []

    def i32(self) -> int:
        self.pos += 4
        return struct.unpack_from(">i", self.buf, self.pos - 4)[0]

    def item(self):
        flags = self.i32()
        kind = flags & 0xFF
        if kind in NULL_AND_ENVS:
            return None
        if kind == REFSXP:  # reference to an earlier symbol: its index in the flags, or in the next int
            return self.refs[(flags >> 8) - 1 if flags >> 8 else self.i32() - 1]
        if kind == SYMSXP:
            self.refs.append(self.item())
            return self.refs[-1]
        if kind == LISTSXP:  # pairlist: [attr] [tag] car cdr
            if flags & HAS_ATTR:
                self.item()  # attributes of a pairlist cell: not needed here
            tag = self.item() if flags & HAS_TAG else None
            car, cdr = self.item(), self.item()
            return [(tag, car)] + (cdr or [])
        if kind == CHARSXP:
            n = self.i32()  # -1: NA_character_
            self.pos += max(n, 0)
            return None if n < 0 else self.buf[self.pos - n:self.pos].decode("utf-8", "replace")
        return self.vector(kind, flags)

    def vector(self, kind: int, flags: int):
        n = self.i32()
        if kind in INTS:
            out = list(struct.unpack_from(f">{n}i", self.buf, self.pos))
            self.pos += 4 * n
        elif kind == REALSXP:
            out = list(struct.unpack_from(f">{n}d", self.buf, self.pos))
            self.pos += 8 * n
        elif kind in LISTS:
            out = [self.item() for _ in range(n)]
        else:
            raise ValueError(f"R type {kind} not supported")
        if flags & HAS_ATTR:
            attrs = dict(self.item())
            if "names" in attrs:
                out = dict(zip(attrs["names"], out))
        return out
