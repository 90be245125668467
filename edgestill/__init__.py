"""edgestill core: what every stage shares and nothing heavier than the standard library + PyYAML.

- `edgestill.errors`: `UserError` and `cli_main`, the one-line, exit-code-2 convention for user mistakes.
- `edgestill.files`: atomic writes, JSONL append, sha256.
- `edgestill.recipe`: the typed recipe (YAML + `key=value` overrides), validated before any work.

The runtime may import this package (it is stdlib-only); it must stay free of torch & co.
"""

__version__ = "0.1.0"
