"""CSV printer of benchmark records: one row per record, nested dicts flattened (`machine.cpu`, `quality.x`).

    python -m edgestill.benchmarks.csv_printer build/default/report/records.jsonl > records.csv

Columns: the record fields in schema order, then every `quality.*` and `machine.*` key any record
has; lists (`noise`, `pinned_cpus`) are joined with "; ", `quantization` is written as JSON.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys

from edgestill.benchmarks.record import read_records, schema
from edgestill.errors import cli_main

NESTED = ("quality", "machine")


def flat(record: dict) -> dict:
    """One CSV row: nested dicts prefixed, lists joined, other objects as JSON."""
    row = {}
    for k, v in record.items():
        if k in NESTED and isinstance(v, dict):
            row.update({f"{k}.{sub}": val for sub, val in v.items()})
        elif isinstance(v, list):
            row[k] = "; ".join(str(x) for x in v)
        elif isinstance(v, dict):
            row[k] = json.dumps(v, sort_keys=True)
        else:
            row[k] = v
    return row


def columns(rows: list[dict]) -> list[str]:
    """Schema fields first (in the schema's order), then anything else in first-seen order."""
    order = [k for k in schema()["properties"] if k not in NESTED]
    seen = [k for row in rows for k in row]
    extra = list(dict.fromkeys(k for k in seen if k not in order))
    return [k for k in order if any(k in row for row in rows)] + sorted(extra, key=lambda k: (k.split(".")[0], 0))


def render_csv(records: list[dict]) -> str:
    rows = [flat(r) for r in records]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns(rows), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="edgestill csv", description=__doc__.split("\n")[0])
    parser.add_argument("records", help="records.jsonl of a benchmark run (or a JSON list of records)")
    sys.stdout.write(render_csv(read_records(parser.parse_args(argv).records)))
    return 0


if __name__ == "__main__":
    cli_main(main)
