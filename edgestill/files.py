"""Small file helpers every stage uses: atomic writes, append-and-flush JSONL, sha256, and the
reader of a user's own records (inputs / labels files).

Atomic means: write to a temp file in the same folder, fsync, then rename over the target,
so a reader (or a resumed run) never sees half a file.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from edgestill.errors import UserError

USER_FORMATS = (".jsonl", ".csv", ".txt")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically (temp file + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 `text` to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON to `path` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read every complete record of a JSONL file; a torn last line (killed writer) is ignored."""
    return list(iter_jsonl(path))


def iter_jsonl(path: str | os.PathLike) -> Iterator[dict]:
    path = Path(path)
    if not path.exists():
        return
    with open(path, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                break  # torn write from a killed run
            if line.strip():
                yield json.loads(line)


def read_user_records(path: str | os.PathLike) -> list[dict]:
    """Records {"input"[, "output", ...]} of a user's file: .jsonl (one object with "input" per
    line), .csv (an "input" column) or .txt (one input per line). A user's mistake (another format,
    not UTF-8, a binary file, a line that is not a JSON object, no records, a record without an
    input) is a UserError naming the file and the line or record."""
    p = Path(path)
    if p.suffix not in USER_FORMATS:
        raise UserError(f"{p}: use a .jsonl, .csv or .txt file of inputs")
    try:
        text = p.read_text(encoding="utf-8-sig")  # -sig: the byte-order mark spreadsheet apps write is dropped
    except UnicodeDecodeError as err:
        raise UserError(f"{p}: not UTF-8 text (bad byte at offset {err.start}); save it as UTF-8") from None
    except OSError as err:
        raise UserError(f"{p}: cannot read it ({err.strerror or err}); check the path") from None
    if "\x00" in text:
        raise UserError(f"{p}: holds NUL bytes, so it looks like a binary file; give a text file of inputs")
    rows = _user_rows(p, text)
    if not rows:
        raise UserError(f"{p}: holds no inputs; give one per line (.txt), per record (.jsonl) or per row (.csv)")
    for i, row in enumerate(rows):
        if not isinstance(row.get("input"), str) or not row["input"].strip():
            raise UserError(f"{p}: record {i + 1} has no non-empty 'input' field")
    return rows


def _user_rows(p: Path, text: str) -> list[dict]:
    if p.suffix == ".txt":
        return [{"input": line.strip()} for line in text.splitlines() if line.strip()]
    if p.suffix == ".csv":
        try:
            return list(csv.DictReader(io.StringIO(text, newline="")))
        except csv.Error as err:
            raise UserError(f"{p}: not a readable CSV file ({err}); give a header row with an 'input' column") from None
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
            except ValueError:
                row = None
            if not isinstance(row, dict):
                raise UserError(f"{p}, line {n}: not a JSON object; each line must look like {{\"input\": \"...\"}}")
            rows.append(row)
    return rows


def repair_jsonl(path: str | os.PathLike) -> None:
    """Cut a torn last line (left by kill -9) so appends start on a clean line."""
    path = Path(path)
    if not path.exists():
        return
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end != len(data):
        with open(path, "r+b") as f:
            f.truncate(end)


class JsonlAppender:
    """Append records to a JSONL file, one line each, flushed and fsynced as they are written."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        repair_jsonl(self.path)
        self._f = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        self._f.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
