"""A small safetensors reader and writer (no `safetensors` package needed): an 8-byte
little-endian header length, a JSON header (padded with spaces to 8 bytes), then the raw
little-endian tensor bytes. Supports F32, BF16, F16, I64 and I32.

Example:
    save_file("model.safetensors", {"w": torch.ones(2, 2, dtype=torch.bfloat16)})
    tensors = load_file("model.safetensors")
"""
import hashlib
import json
import struct
import sys
from typing import Dict

import numpy as np
import torch

# dtype name -> (torch dtype, numpy dtype of the raw bits)
DTYPES = {
    "F32": (torch.float32, np.float32),
    "BF16": (torch.bfloat16, np.int16),
    "F16": (torch.float16, np.float16),
    "I64": (torch.int64, np.int64),
    "I32": (torch.int32, np.int32),
}
NAMES = {t: n for n, (t, _) in DTYPES.items()}
assert sys.byteorder == "little", "safetensors are little-endian; this writer assumes the host is"


def _raw(t: torch.Tensor) -> bytes:
    t = t.detach().to("cpu").contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.numpy().tobytes()  # the hosts this runs on are little-endian (checked below)


def save_file(path: str, tensors: Dict[str, torch.Tensor],
              metadata: Dict[str, str] = None) -> str:
    """Writes tensors (sorted by name) and returns the file's sha256."""
    header: Dict[str, object] = {"__metadata__": metadata or {"format": "pt"}}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name]
        if t.dtype not in NAMES:
            raise ValueError(f"{name}: dtype {t.dtype} is not supported")
        data = _raw(t)
        header[name] = {"dtype": NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for chunk in (struct.pack("<Q", len(text)), text, *blobs):
            f.write(chunk)
            h.update(chunk)
    return h.hexdigest()


def load_file(path: str) -> Dict[str, torch.Tensor]:
    """Reads every tensor of a safetensors file (CPU tensors of the stored dtype)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out: Dict[str, torch.Tensor] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in DTYPES:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        tdtype, ndtype = DTYPES[info["dtype"]]
        a, b = info["data_offsets"]
        arr = np.frombuffer(data[base + a:base + b], dtype=ndtype)
        t = torch.from_numpy(arr.copy()).reshape(info["shape"])
        out[name] = t.view(torch.bfloat16) if tdtype == torch.bfloat16 else t
    return out


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
