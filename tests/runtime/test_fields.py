"""Format-constrained answers (runtime/fields.py): whatever the logits, the answer is one JSON object
with exactly the fields, in order; tokens that would break it are never chosen; a long value is
closed; and `Generator.extract` / `--fields` on a tiny exported bundle."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from edgestill.runtime import Bundle, Generator, PromptError
from edgestill.runtime.fields import (
    END,
    LIT,
    STR,
    FieldsFormat,
    FieldsGuide,
    TokenTable,
    token_pieces,
)

FIELDS = ["day", "time", "place"]
TEXT = "Hey, want to grab dinner at Rosa's Cafe on Friday around 7 pm?"


@pytest.fixture(scope="module")
def table(fp32_bundle):
    return TokenTable.of(token_pieces(Bundle.open(fp32_bundle, verify=False).tokenizer))


def guide(table, fields=FIELDS, **fmt) -> FieldsGuide:
    return FieldsGuide(FieldsFormat(fields, **fmt), table, len(table.pieces), eos_id=2)


def greedy(g: FieldsGuide, logits_at, steps: int = 300) -> tuple[bytes, list[int]]:
    """Run the guide on `logits_at(step)`; returns the answer bytes and the chosen tokens."""
    state, out, chosen = g.fmt.start, bytearray(), []
    for step in range(steps):
        token = g.pick(state, logits_at(step))
        assert g.allowed(state)[token] and g.fmt.walk(state, g.table.pieces[token]) is not None
        chosen.append(token)
        out += g.table.pieces[token]
        state = g.advance(state, token)
        if state[0] == END:
            break
    return bytes(out + g.fmt.completion(state)), chosen


def test_random_logits_always_give_the_fields_in_order(table):
    g, rng = guide(table), np.random.default_rng(0)
    nulls = 0
    for _ in range(20):
        out, _ = greedy(g, lambda step: rng.standard_normal(len(table.pieces)).astype(np.float32) * 5)
        answer = json.loads(out.decode("utf-8", "replace"))
        assert list(answer) == FIELDS and all(v is None or isinstance(v, str) for v in answer.values())
        nulls += sum(v is None for v in answer.values())
    assert nulls > 0  # null is reachable


def test_breaking_tokens_are_never_chosen(table):
    g = guide(table)
    exact = {p: i for i, p in enumerate(table.pieces) if p}
    bad = [exact[b"\\"], exact[b"\n"], 2]  # backslash, newline, the end token
    logits = np.zeros(len(table.pieces), dtype=np.float32)
    logits[bad] = 100.0
    logits[exact[b'"}']] = 90.0  # closes the object: only right after the last value
    out, chosen = greedy(g, lambda step: logits)
    assert not set(chosen) & set(bad) and list(json.loads(out)) == FIELDS
    assert {table.pieces[i] for i in np.flatnonzero(g.allowed(g.fmt.start))} == {b"{", b'{"'}
    first, last = g.allowed((STR, 0, 3)), g.allowed((STR, 2, 3))
    assert not first[bad].any() and not first[exact[b'"}']] and first[exact[b'"']] and first[exact[b" the"]]
    assert last[exact[b'"}']] and not last[bad].any()
    assert np.flatnonzero(g.allowed((END, 0, 0))).tolist() == [2]  # only the end token, after the "}"


def test_a_long_value_is_closed_at_the_cap(table):
    g = guide(table, max_value_bytes=8, nulls=False)
    the = table.pieces.index(b" the")
    logits = np.zeros(len(table.pieces), dtype=np.float32)
    logits[the] = 50.0  # the model wants " the" forever
    out, _ = greedy(g, lambda step: logits)
    assert json.loads(out) == {"day": " the the", "time": " the the", "place": " the the"}


def test_completion_closes_any_state():
    fmt = FieldsFormat(FIELDS)
    state = fmt.walk(fmt.start, b'{"day": "Fri')
    assert state == (STR, 0, 3)
    assert json.loads(b'{"day": "Fri' + fmt.completion(state)) == {"day": "Fri", "time": None, "place": None}
    state = fmt.walk(fmt.start, b'{"day": null, "time": "", "pl')
    assert state[0] == LIT and json.loads(b'{"day": null, "time": "", "pl' + fmt.completion(state))["place"] is None
    assert fmt.walk(fmt.start, b'{"day": "a", "time": "b", "place": "c"}') == (END, 0, 0)
    assert fmt.walk(fmt.start, b'{"day": "a\\"') is None and fmt.walk(fmt.start, b'{"day":"a"') is None
    empty = FieldsFormat(["a b", 'q"'], nulls=False)  # names are JSON-escaped as json.dumps writes them
    assert json.loads(empty.completion(empty.start)) == {"a b": "", 'q"': ""}


@pytest.fixture(scope="module")
def gen(fp32_bundle):
    return Generator(Bundle.open(fp32_bundle), threads=1)


@pytest.fixture(scope="module")
def fields_bundle(fp32_bundle, tmp_path_factory):
    """The tiny bundle with task.fields in its manifest (manifest.json is not in its file list)."""
    out = tmp_path_factory.mktemp("fields") / "bundle"
    shutil.copytree(fp32_bundle, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["task"] = {"fields": FIELDS}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_extract_gives_the_fields(gen, fields_bundle):
    answer = gen.extract(TEXT, ["when", "where"])
    assert list(answer) == ["when", "where"] and all(v is None or isinstance(v, str) for v in answer.values())
    short = gen.extract(TEXT, FIELDS, max_new_tokens=2)  # cut short: closed, the rest null
    assert list(short) == FIELDS and short["place"] is None
    own = Generator(Bundle.open(fields_bundle), threads=1)
    assert own.bundle.fields == FIELDS and list(own.extract(TEXT)) == FIELDS


@pytest.mark.parametrize("fields", [[], ["a", "a"], ["a", " "], "day", ["a", 3]])
def test_bad_fields_are_refused(gen, fields):
    with pytest.raises(PromptError, match="field"):
        gen.extract(TEXT, fields)


def test_a_bundle_without_fields_needs_them(gen):
    assert gen.bundle.fields is None
    with pytest.raises(PromptError, match="no task fields"):
        gen.extract(TEXT)


def cli(*args):
    return subprocess.run([sys.executable, "-m", "edgestill.runtime", "generate", *map(str, args)],
                          capture_output=True, text=True)


def test_cli_prints_the_object(fp32_bundle, fields_bundle):
    done = cli(fp32_bundle, "--prompt", TEXT, "--fields", "day,time", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert list(out["fields"]) == ["day", "time"] and json.loads(out["text"]) == out["fields"]
    own = cli(fields_bundle, "--prompt", TEXT, "--fields")
    assert own.returncode == 0 and list(json.loads(own.stdout)) == FIELDS
    for args, words in ((["--fields"], "no task fields"), (["--fields", "a,,b"], "non-empty"),
                        (["--fields", "a", "--labels"], "not both")):
        bad = cli(fp32_bundle, "--prompt", TEXT, *args)
        assert bad.returncode == 2 and words in bad.stderr and "Traceback" not in bad.stderr
