"""Benchmarks: bundles -> size, memory, latency and quality on this CPU, ssh boards and adb phones
(`edgestill bench RECIPE`), one record schema (record.schema.json), many printers. Boards run
measure.py with the runtime alone, so this package's __init__ imports nothing."""
