"""The benchmark record: its JSON Schema (`record.schema.json`), validation, error records, reading runs.

    python -m edgestill.benchmarks.record FILE.jsonl|FILE.json      # validate every record, one line per problem

One record per (bundle, engine, target, threads, prompt_tokens, gen_tokens); every printer reads
records and nothing else. A failed measurement is still a record (`status: "error"`, `error`: one
line saying what failed and what to do), so a run writes every row it has and the report shows
what went wrong where. The Android demo writes the same records (a JSON list) in benchmark mode.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

from edgestill.errors import UserError, cli_main
from edgestill.files import atomic_write_text

SCHEMA_PATH = Path(__file__).with_name("record.schema.json")
SCHEMA_NAME = "edgestill-bench-record"
SCHEMA_VERSION = 1
KEY_FIELDS = ("name", "engine", "target", "threads", "prompt_tokens", "gen_tokens")


@lru_cache(maxsize=1)
def schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def problems(record: dict) -> list[str]:
    """What is wrong with `record` against the schema (empty when valid); needs `jsonschema`."""
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(schema())
    return [f"{'.'.join(str(p) for p in e.absolute_path) or '(record)'}: {e.message}"
            for e in validator.iter_errors(record)]


def is_ok(record: dict) -> bool:
    """Records written before `status` existed are ok."""
    return record.get("status", "ok") == "ok"


def key(record: dict) -> tuple:
    """What identifies a row across runs: name, engine, target and the settings."""
    return tuple(record.get(k, "edgestill-runtime" if k == "engine" else None) for k in KEY_FIELDS)


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def error_record(facts: dict, settings: dict, message: str) -> dict:
    """A record for a measurement that failed: what was asked (`facts` of the model, `settings`) + why."""
    return {"schema": SCHEMA_NAME, "schema_version": SCHEMA_VERSION, "status": "error",
            "error": " ".join(str(message).split()) or "failed without a message",
            **facts, **settings, "load_s": None, "ttft_ms_p50": None, "peak_rss_mb": None,
            "quality": {}, "started_at": now_utc()}


def tool_record(tool: str, name: str, bundle: str, settings: dict, machine: dict, **figures) -> dict:
    """A record of one row of a side tool (runtime_speed, lookup_speed, optimum_peer): `settings`
    holds threads, prompt_tokens, gen_tokens (+ engine, repetitions, ...); what it did not measure
    (load time, TTFT, peak RSS) is null unless `figures` gives it."""
    return {"schema": SCHEMA_NAME, "schema_version": SCHEMA_VERSION, "status": "ok", "error": None, "tool": tool,
            "name": name, "bundle": bundle, "target": "local", "repetitions": 1, "load_s": None,
            "ttft_ms_p50": None, "peak_rss_mb": None, "quality": {}, "machine": machine, "started_at": now_utc(),
            **settings, **figures}


def bundle_name(folder: str | Path) -> str:
    """The bundle manifest's name, else the folder's name (Optimum's exports have no manifest)."""
    try:
        return json.loads((Path(folder) / "manifest.json").read_text(encoding="utf-8")).get("name") or Path(folder).name
    except (OSError, ValueError):
        return Path(folder).name


def write_records(path: str | Path, records: list[dict]) -> Path:
    """`records` as JSON lines (what `read_records`, `compare` and the printers read); ValueError
    naming the first problem when one is not a valid record (checked where jsonschema is installed)."""
    try:
        bad = [(r.get("name"), p) for r in records for p in problems(r)]
    except ImportError:
        bad = []
    if bad:
        raise ValueError(f"not a valid benchmark record: {bad[0][0]}: {bad[0][1]}")
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return Path(path)


def read_records(path: str | Path) -> list[dict]:
    """Records from a `.jsonl` file (one per line), a JSON list, or a single JSON record."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found; run `edgestill bench RECIPE` to write records.jsonl")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".jsonl":
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            data = json.loads(text)
            records = data if isinstance(data, list) else [data]
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None
    if not all(isinstance(r, dict) and r.get("schema") == SCHEMA_NAME for r in records):
        raise UserError(f"{path}: not benchmark records (each needs \"schema\": \"{SCHEMA_NAME}\")")
    return records


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        raise UserError("usage: python -m edgestill.benchmarks.record FILE.jsonl|FILE.json")
    bad = 0
    for i, record in enumerate(read_records(argv[0])):
        for problem in problems(record):
            print(f"record {i} ({record.get('name')}): {problem}")
            bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    cli_main(main)
