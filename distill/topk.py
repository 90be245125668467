"""Compact, append-only store of the teacher's top-k log-probs for offline soft-target KD.

Two flat binary files in `data/`: `topk_logp.f16` (float16 log-probs at temperature 1) and
`topk_ids.u16` (uint16 token ids; `topk_ids.i32` when the vocabulary has more than 65,535
tokens), each row `k` wide, one row per answer token. A record in `teacher.jsonl` points at its
rows with `topk_offset` and `topk_len`. Rows are written and fsynced before the record that
points at them, so after kill -9 `truncate_to` cuts any rows no record refers to.

At k=64 a token costs 64 * (2 + 2) = 256 bytes, about 250 KiB per 1k tokens.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


class TopkStore:
    """Append rows of (ids, log-probs), each [n, k]; read them back by (offset, length)."""

    def __init__(self, folder: str | os.PathLike, k: int, vocab_size: int):
        self.folder, self.k = Path(folder), k
        self.id_dtype = np.uint16 if vocab_size <= np.iinfo(np.uint16).max else np.int32
        suffix = "u16" if self.id_dtype == np.uint16 else "i32"
        self.ids_path = self.folder / f"topk_ids.{suffix}"
        self.logp_path = self.folder / "topk_logp.f16"
        self.folder.mkdir(parents=True, exist_ok=True)
        for p in (self.ids_path, self.logp_path):
            p.touch(exist_ok=True)

    def rows(self) -> int:
        """Complete rows present in both files."""
        n_ids = self.ids_path.stat().st_size // (self.k * np.dtype(self.id_dtype).itemsize)
        n_logp = self.logp_path.stat().st_size // (self.k * 2)
        return min(n_ids, n_logp)

    def truncate_to(self, rows: int) -> None:
        """Drop rows past `rows` (left by a run killed between rows and record)."""
        for path, size in ((self.ids_path, np.dtype(self.id_dtype).itemsize), (self.logp_path, 2)):
            with open(path, "r+b") as f:
                f.truncate(rows * self.k * size)

    def append(self, ids: np.ndarray, logp: np.ndarray) -> int:
        """Append rows; `ids`, `logp`: [n, k]. Returns the offset (row index) of the first row."""
        assert ids.shape == logp.shape and ids.shape[1] == self.k, (ids.shape, logp.shape)
        offset = self.rows()
        for path, arr in ((self.ids_path, ids.astype(self.id_dtype)), (self.logp_path, logp.astype(np.float16))):
            with open(path, "ab") as f:
                f.write(np.ascontiguousarray(arr).tobytes())
                f.flush()
                os.fsync(f.fileno())
        return offset

    def read(self, offset: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows [offset, offset + length) as (ids int64 [length, k], logp float32 [length, k])."""
        ids = np.memmap(self.ids_path, dtype=self.id_dtype, mode="r").reshape(-1, self.k)
        logp = np.memmap(self.logp_path, dtype=np.float16, mode="r").reshape(-1, self.k)
        return (ids[offset:offset + length].astype(np.int64),
                logp[offset:offset + length].astype(np.float32))
