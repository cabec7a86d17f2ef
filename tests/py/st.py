"""Minimal safetensors reader/writer on numpy (the Python package is not in Debian 12)."""
import json
import struct

import numpy as np

_DT = {"F32": np.float32, "F64": np.float64, "I32": np.int32, "I64": np.int64}
_NAME = {np.dtype(v): k for k, v in _DT.items()}


class BF16:
    """A tensor stored as bfloat16 (numpy has no bfloat16): the float32 values rounded to nearest
    even; `.bits` the uint16 words, `.f32` the values they represent."""

    def __init__(self, a):
        u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
        self.bits = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
        self.f32 = (self.bits.astype(np.uint32) << 16).view(np.float32)


def save(path, tensors):
    header, blobs, off = {}, [], 0
    for name, arr in tensors.items():
        if isinstance(arr, BF16):
            b = arr.bits.astype("<u2").tobytes()
            header[name] = {"dtype": "BF16", "shape": list(arr.bits.shape), "data_offsets": [off, off + len(b)]}
            blobs.append(b)
            off += len(b)
            continue
        arr = np.ascontiguousarray(arr)
        b = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": _NAME[arr.dtype], "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - (len(h) + 8) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def load(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, en = e["data_offsets"]
        if e["dtype"] == "BF16":  # as float32 values
            u = np.frombuffer(data[8 + n + b : 8 + n + en], dtype="<u2").astype(np.uint32) << 16
            out[name] = u.view(np.float32).reshape(e["shape"])
            continue
        out[name] = np.frombuffer(data[8 + n + b : 8 + n + en], dtype=_DT[e["dtype"]]).reshape(e["shape"])
    return out
