"""Top-k store, JSONL append/repair, input cleaning, dedup and user input files."""

import json

import numpy as np
import pytest

from edgestill.distill.inputs import Deduper, clean_generated, read_user_inputs
from edgestill.distill.topk import TopkStore
from edgestill.errors import UserError
from edgestill.files import JsonlAppender, read_jsonl


def test_topk_roundtrip_and_truncate(tmp_path):
    store = TopkStore(tmp_path, k=4, vocab_size=49152)
    a_ids, a_lp = np.arange(8).reshape(2, 4), -np.arange(8, dtype=np.float32).reshape(2, 4) / 3
    b_ids, b_lp = np.arange(12).reshape(3, 4) + 100, np.zeros((3, 4), np.float32)
    assert store.append(a_ids, a_lp) == 0
    assert store.append(b_ids, b_lp) == 2
    ids, lp = store.read(2, 3)
    assert (ids == b_ids).all() and ids.dtype == np.int64
    _, lp_a = store.read(0, 2)
    assert np.allclose(lp_a, a_lp, atol=1e-2)  # fp16 storage
    assert store.ids_path.stat().st_size == 5 * 4 * 2  # uint16 ids: 2 bytes each
    store.truncate_to(2)
    assert store.rows() == 2


def test_topk_uses_int32_for_big_vocab(tmp_path):
    store = TopkStore(tmp_path, k=2, vocab_size=100_000)
    store.append(np.array([[99_999, 70_000]]), np.zeros((1, 2)))
    assert store.read(0, 1)[0].tolist() == [[99_999, 70_000]]


def test_jsonl_survives_torn_last_line(tmp_path):
    path = tmp_path / "x.jsonl"
    with JsonlAppender(path) as out:
        out.write({"id": 0})
        out.write({"id": 1})
    with open(path, "a") as f:
        f.write('{"id": 2, "inp')  # what kill -9 mid-write leaves
    assert [r["id"] for r in read_jsonl(path)] == [0, 1]
    with JsonlAppender(path) as out:
        out.write({"id": 2})
    assert [r["id"] for r in read_jsonl(path)] == [0, 1, 2]


@pytest.mark.parametrize("raw,expect", [
    ("Here is a new text:\n\nThe bakery opened at dawn. It sold out by noon. Then it", "The bakery opened at dawn. It sold out by noon."),
    ("Sure! Here's one:\nRain fell all day.", "Rain fell all day."),
    ("no sentence end here", ""),
    ('"Quoted text ends."', "Quoted text ends."),
])
def test_clean_generated(raw, expect):
    assert clean_generated(raw) == expect


def test_deduper_drops_exact_and_near_duplicates():
    d = Deduper(["The city council voted to expand the bike lanes across the old town."])
    assert not d.add("The city council voted to expand the bike lanes across the old town.")
    assert not d.add("The city council voted to expand the bike lanes across the old town today.")
    assert d.add("A new bakery opened on the corner and sold fresh bread to the whole street.")
    assert not d.add("A new bakery opened on the corner and sold fresh bread to the whole street!")


def test_deduper_drops_texts_that_copy_the_seeds():
    seed = "The city council voted on Tuesday to expand the bike lane network by 40 kilometres."
    d = Deduper(seeds=[seed])
    assert not d.add("Our school board said the council voted on Tuesday to expand the bike lane network downtown.")
    assert d.add("The school board voted to add a new science lab and hire two more chemistry teachers.")


def test_read_user_inputs_formats(tmp_path):
    (tmp_path / "a.txt").write_text("one\n\ntwo\n")
    (tmp_path / "a.jsonl").write_text(json.dumps({"input": "x", "output": "y"}) + "\n")
    (tmp_path / "a.csv").write_text("input,other\nhello,1\n")
    assert [r["input"] for r in read_user_inputs(str(tmp_path / "a.txt"))] == ["one", "two"]
    assert read_user_inputs(str(tmp_path / "a.jsonl"))[0]["output"] == "y"
    assert read_user_inputs(str(tmp_path / "a.csv"))[0]["input"] == "hello"
    (tmp_path / "excel.csv").write_bytes("input,output\r\nCafé,x\r\n".encode("utf-8-sig"))  # BOM + CRLF
    assert read_user_inputs(str(tmp_path / "excel.csv")) == [{"input": "Café", "output": "x"}]
    (tmp_path / "bad.jsonl").write_text(json.dumps({"text": "x"}) + "\n")
    with pytest.raises(UserError, match="record 1"):
        read_user_inputs(str(tmp_path / "bad.jsonl"))



@pytest.mark.parametrize("name, content, message", [
    ("latin1.txt", "caf\xe9 au lait\n".encode("latin-1"), "not UTF-8 text .bad byte at offset 3"),
    ("image.txt", b"GIF89a\x01\x00\x01\x00\x00\xff", "not UTF-8 text"),
    ("blob.txt", b"GIF89a\x01\x00\x01\x00\x00", "NUL bytes, so it looks like a binary file"),
    ("empty.jsonl", b"\n\n", "holds no inputs"),
    ("empty.csv", b"", "holds no inputs"),
    ("broken.jsonl", b'{"input": "fine"}\n{"input": "cut\n', "line 2: not a JSON object"),
    ("list.jsonl", b'["input", "x"]\n', "line 1: not a JSON object"),
    ("inputs.xlsx", b"PK", "use a .jsonl, .csv or .txt file"),
])
def test_bad_user_files_are_user_errors_naming_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UserError, match=message) as err:
        read_user_inputs(str(path))
    assert str(path) in str(err.value)



def test_a_missing_or_unreadable_user_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match=r"nowhere.jsonl: cannot read it \(No such file or directory\)"):
        read_user_inputs(str(tmp_path / "nowhere.jsonl"))
    (tmp_path / "folder.txt").mkdir()
    with pytest.raises(UserError, match=r"folder.txt: cannot read it"):
        read_user_inputs(str(tmp_path / "folder.txt"))


def test_acceptable_rejects_short_degenerate_and_meta_texts(teacher_dir):
    from transformers import AutoTokenizer

    from edgestill.distill.inputs import acceptable

    tok = AutoTokenizer.from_pretrained(teacher_dir)
    good = "The museum opened a new hall of old maps on Monday, and visitors queued around the block to see it."
    assert acceptable(good, tok, 64)
    assert not acceptable("Too short to use.", tok, 64)
    assert not acceptable(good, tok, 8)  # over the token budget
    assert not acceptable("word " * 30 + "end.", tok, 64)
    assert not acceptable("Here is an example of a text about maps that the museum opened on Monday for all.", tok, 64)
    assert not acceptable("A helpful AI assistant, SmolLM, designed an alternative version that reads the same as before.", tok, 64)


def test_atomic_write_gives_a_readable_file(tmp_path):
    from edgestill.files import atomic_write_json

    atomic_write_json(tmp_path / "a.json", {"x": 1})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1}
    import os

    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's 0600
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temp file left behind
