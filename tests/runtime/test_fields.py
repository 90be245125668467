"""Format-constrained answers (runtime/fields.py): whatever the logits, the answer is one JSON object
with exactly the fields, in order; tokens that would break it are never chosen; a long value is
closed; verbatim, every value is null or a non-empty span of the input; and `Generator.extract` /
`--fields` / `--verbatim` on a tiny exported bundle."""

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
    QUOTE,
    STR,
    FieldsFormat,
    FieldsGuide,
    TokenTable,
    token_pieces,
)

FIELDS = ["day", "time", "place"]
TEXT = "Hey, want to grab dinner at Rosa's Cafe on Friday around 7 pm?"
TEXTS = [TEXT, "Zoë's piano lesson: Tuesday 4:30 pm at Café Größe, 2nd floor 🎹 (bring \"the\" book)",
         "Lunch?\tTomorrow, noon — C:\\office\\kitchen, table 3"]


@pytest.fixture(scope="module")
def table(fp32_bundle):
    return TokenTable.of(token_pieces(Bundle.open(fp32_bundle, verify=False).tokenizer))


def guide(table, fields=FIELDS, **fmt) -> FieldsGuide:
    return FieldsGuide(FieldsFormat(fields, **fmt), table, len(table.pieces), eos_id=2)


def greedy(g: FieldsGuide, logits_at, steps: int = 300, hold: list[int] = ()) -> tuple[bytes, list[int]]:
    """Run the guide on `logits_at(step)` (the `hold` tokens 30 lower inside values); returns the
    answer bytes and the chosen tokens."""
    state, out, chosen = g.fmt.start, bytearray(), []
    for step in range(steps):
        logits = logits_at(step)
        if hold and state[0] == STR:
            logits = logits.copy()
            logits[hold] -= 30
        token = g.pick(state, logits)
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
    first, last = g.allowed((STR, 0, b"Fri")), g.allowed((STR, 2, b"Fri"))
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
    assert state == (STR, 0, b"Fri")
    assert json.loads(b'{"day": "Fri' + fmt.completion(state)) == {"day": "Fri", "time": None, "place": None}
    state = fmt.walk(fmt.start, b'{"day": null, "time": "", "pl')
    assert state[0] == LIT and json.loads(b'{"day": null, "time": "", "pl' + fmt.completion(state))["place"] is None
    assert fmt.walk(fmt.start, b'{"day": "a", "time": "b", "place": "c"}') == (END, 0, 0)
    assert fmt.walk(fmt.start, b'{"day": "a\\"') is None and fmt.walk(fmt.start, b'{"day":"a"') is None
    empty = FieldsFormat(["a b", 'q"'], nulls=False)  # names are JSON-escaped as json.dumps writes them
    assert json.loads(empty.completion(empty.start)) == {"a b": "", 'q"': ""}


def spans_only(answer: dict, text: str) -> bool:
    return list(answer) == FIELDS and all(v is None or (isinstance(v, str) and v and v in text) for v in answer.values())


def test_verbatim_values_are_spans_of_the_input(table):
    """Random logits, many seeds, texts with multi-byte characters, quotes, backslashes and a tab:
    every value is null or a non-empty span of the text (and the answer is valid UTF-8). With the
    quote tokens held down inside values, values run on to the cap (12 bytes) or the end of a span."""
    g, rng = guide(table), np.random.default_rng(1)
    short = guide(table, max_value_bytes=12)
    values, long_values = [], []
    for text in TEXTS:
        for g_, hold in ((g, []), (short, table.quoted)):
            v = g_.verbatim(text)
            for _ in range(12):
                out, _ = greedy(v, lambda step: rng.standard_normal(len(table.pieces)).astype(np.float32) * 5,
                                hold=hold)
                answer = json.loads(out.decode("utf-8"))  # strict: no character cut in two
                assert spans_only(answer, text), (text, answer)
                (long_values if hold else values).extend(x for x in answer.values() if x)
    assert len(values) > 30 and len(long_values) > 20
    assert max(len(x.encode()) for x in long_values) == 12 and any(not x.isascii() for x in long_values)


def test_verbatim_mask_is_exactly_the_tokens_that_keep_a_span(table):
    """The per-request masks (candidates from substring lookups, cached masks filtered) allow exactly
    the tokens whose bytes keep the answer on the verbatim automaton, checked over the whole vocabulary."""
    text = "Dinner at Café Rosa on Friday, 7 pm"
    v = guide(table).verbatim(text)
    fmt = v.fmt
    states = [fmt.start, fmt.walk(fmt.start, b'{"day": '), (STR, 0, b""), (STR, 0, b"Fri"), (STR, 2, b"Caf\xc3"),
              (STR, 1, b"7 pm"), fmt.walk(fmt.start, b'{"day": nu'), fmt.walk(fmt.start, b'{"day": "Friday", "ti')]
    for state in states:
        want = [t for t, p in enumerate(table.pieces) if p and fmt.walk(state, p) is not None]
        assert np.flatnonzero(v.allowed(state)).tolist() == want, state
    exact = {p: i for i, p in enumerate(table.pieces) if p}
    opened, fri, cafe = v.allowed((STR, 0, b"")), v.allowed((STR, 0, b"Fri")), v.allowed((STR, 2, b"Caf\xc3"))
    assert opened[exact[b"Friday"]] and not opened[exact[b'"']] and not opened[exact[b" the"]]  # empty: no close
    assert not opened[exact[b" Friday"]] and not opened[exact[b"day"]]  # a value starts a word, never a space
    assert fri[exact[b"day"]] and not fri[exact[b'"']] and not fri[exact[b"end"]]  # "Fri" ends no word
    assert np.flatnonzero(cafe).tolist() == [exact[b"\xa9"]]  # the character's last byte, then it may close
    assert v.allowed((STR, 2, b"Rosa"))[exact[b'"}']] and v.allowed((STR, 0, b"Friday"))[exact[b'"']]


def test_verbatim_refuses_empty_values_and_broken_characters():
    fmt = FieldsFormat(FIELDS, source=TEXT)
    assert fmt.walk(fmt.start, b'{"day": ""') is None  # an absent field is null, not ""
    assert fmt.walk(fmt.start, b'{"day": null, "time": "7 pm", "place": "Rosa') == (STR, 2, b"Rosa")
    assert fmt.walk(fmt.start, b'{"day": "Sunday') is None and fmt.walk(fmt.start, b'{"day": "7 pm ') is None
    no_nulls = FieldsFormat(FIELDS, nulls=False, source=TEXT)
    assert no_nulls.walk(no_nulls.start, b'{"day": ""') == (LIT, 1, 0)  # without null, "" is the way to say none
    bare = FieldsFormat(FIELDS, source='"\\"\n')  # nothing a value may hold: only null
    opened = bare.walk(bare.start, b'{"day": ')
    assert bare.next_bytes(opened) == b"n" and bare.step(opened, QUOTE) is None
    cafe = FieldsFormat(FIELDS, source="Café")
    assert cafe.walk(cafe.start, b'{"day": "\xa9') is None  # starts inside a character
    state = cafe.walk(cafe.start, b'{"day": "Caf\xc3')
    assert state == (STR, 0, b"Caf\xc3") and cafe.step(state, QUOTE) is None  # closes only on a whole character
    assert json.loads(cafe.close(b'{"day": "Caf\xc3', state)) == {"day": "Caf", "time": None, "place": None}
    tight = FieldsFormat(FIELDS, max_value_bytes=4, source="Café")
    assert tight.walk(tight.start, b'{"day": "Caf\xc3') is None  # its last character would pass the cap


def test_verbatim_values_are_whole_words():
    """A value starts and ends where a word does: not inside one, not on a space, and not where it
    could never end a word before the cap or a byte no value may hold."""
    fmt = FieldsFormat(FIELDS, source="Pick-up at 6:15 am (the Rosa's Cafe), 8 a.m., Zoë's \"loft\" ok")
    ok = ['{"day": null, "time": "6:15 am", "place": "Rosa\'s Cafe"}', '{"day": "Pick-up", "time": "8 a.m.", "place": null}',
          '{"day": null, "time": "8 a.m", "place": "(the Rosa\'s Cafe),"}', '{"day": "Zoë\'s", "time": null, "place": "loft"}']
    for answer in ok:
        assert fmt.walk(fmt.start, answer.encode()) == (END, 0, 0), answer
    for head in ['{"day": "15 am"', '{"day": "Ros"', '{"day": "Rosa"', '{"day": "6:15 "', '{"day": " 6', '{"day": "up"',
                 '{"day": "Zo"']:
        assert fmt.walk(fmt.start, head.encode() + b'"') is None, head
    assert fmt.walk(fmt.start, b'{"day": "Rosa') is not None  # goes on to "Rosa's"
    assert fmt.walk(fmt.start, "{\"day\": \"Zoë's ".encode()) is None  # would run into the quote before a word ends
    cjk = FieldsFormat(["place"], source="会议在东京举行")  # no spaces: any character edge
    assert cjk.walk(cjk.start, '{"place": "东京"}'.encode()) == (END, 0, 0)
    capped = FieldsFormat(FIELDS, max_value_bytes=6, source="Tuesday morning")
    assert capped.walk(capped.start, b'{"day": "T') is None  # no word ends within 6 bytes of "T"


def test_verbatim_answers_null_where_the_model_wants_empty(table):
    exact = {p: i for i, p in enumerate(table.pieces) if p}
    logits = np.zeros(len(table.pieces), dtype=np.float32)
    logits[exact[b'""']], logits[exact[b"null"]] = 50.0, 40.0  # the model prefers "", then null
    plain, _ = greedy(guide(table), lambda step: logits)
    verbatim, _ = greedy(guide(table).verbatim(TEXT), lambda step: logits)
    assert json.loads(plain) == dict.fromkeys(FIELDS, "")
    assert json.loads(verbatim) == dict.fromkeys(FIELDS, None)


@pytest.fixture(scope="module")
def gen(fp32_bundle):
    return Generator(Bundle.open(fp32_bundle), threads=1)


@pytest.fixture(scope="module")
def fields_bundle(fp32_bundle, tmp_path_factory):
    """The tiny bundle with task.fields and verbatim in its manifest (manifest.json is not in its file list)."""
    out = tmp_path_factory.mktemp("fields") / "bundle"
    shutil.copytree(fp32_bundle, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["task"] = {"fields": FIELDS, "verbatim": True}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_extract_gives_the_fields(gen, fields_bundle):
    answer = gen.extract(TEXT, ["when", "where"])
    assert list(answer) == ["when", "where"] and all(v is None or isinstance(v, str) for v in answer.values())
    short = gen.extract(TEXT, FIELDS, max_new_tokens=2)  # cut short: closed, the rest null
    assert list(short) == FIELDS and short["place"] is None
    own = Generator(Bundle.open(fields_bundle), threads=1)
    assert own.bundle.fields == FIELDS and list(own.extract(TEXT)) == FIELDS


def test_extract_verbatim_follows_the_manifest(gen, fields_bundle):
    own = Generator(Bundle.open(fields_bundle), threads=1)
    assert gen.bundle.verbatim is False and own.bundle.verbatim is True
    free, copied = gen.extract(TEXT, FIELDS), gen.extract(TEXT, FIELDS, verbatim=True)
    assert free != copied and not spans_only(free, TEXT)  # the random model invents text when free
    assert own.extract(TEXT) == copied and own.extract(TEXT, verbatim=False) == free
    for text in TEXTS:
        assert spans_only(own.extract(text), text)
        assert spans_only(own.extract(text, max_new_tokens=9), text)  # cut short: closed on a whole character
    with pytest.raises(PromptError, match="verbatim"):
        gen.extract(TEXT, FIELDS, verbatim="yes")


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
    assert own.returncode == 0 and spans_only(json.loads(own.stdout), TEXT)  # the bundle's verbatim
    free = cli(fields_bundle, "--prompt", TEXT, "--fields", "--no-verbatim")
    assert free.returncode == 0 and json.loads(free.stdout) != json.loads(own.stdout)
    copied = cli(fp32_bundle, "--prompt", TEXT, "--fields", ",".join(FIELDS), "--verbatim")
    assert copied.returncode == 0 and copied.stdout == own.stdout
    for args, words in ((["--fields"], "no task fields"), (["--fields", "a,,b"], "non-empty"),
                        (["--fields", "a", "--labels"], "not both"), (["--verbatim"], "go with --fields")):
        bad = cli(fp32_bundle, "--prompt", TEXT, *args)
        assert bad.returncode == 2 and words in bad.stderr and "Traceback" not in bad.stderr
