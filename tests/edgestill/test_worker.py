"""edgestill.worker: a worker's last stdout line as JSON, or an error that says what failed."""

from __future__ import annotations

import sys

import pytest

from edgestill.errors import UserError
from edgestill.worker import WorkerError, run_json


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_last_json_line_wins_over_earlier_output():
    got = run_json(py("print('loading...'); print('{\"a\": 1}'); print('[1, 2]'); print()"), "w")
    assert got == [1, 2]


def test_exit_2_is_the_childs_user_error_line():
    code = "import sys; print('warming up', file=sys.stderr); print('error: no bundle at x', file=sys.stderr); sys.exit(2)"
    with pytest.raises(UserError, match=r"^no bundle at x$"):
        run_json(py(code), "w")


def test_a_crash_names_the_worker_exit_code_and_stderr_tail():
    with pytest.raises(WorkerError) as err:
        run_json(py("import sys; print('step 1', file=sys.stderr); raise SystemExit('boom')"), "edgestill on b1")
    text = str(err.value)
    assert text.startswith("edgestill on b1 failed (exit 1): boom") and "stderr tail:\nstep 1\nboom" in text


def test_tail_chars_0_keeps_the_message_on_one_line():
    with pytest.raises(WorkerError) as err:
        run_json(py("import sys; print('a', file=sys.stderr); sys.exit(3)"), "m", tail_chars=0)
    assert str(err.value) == "m failed (exit 3): a"


def test_output_without_json_is_a_worker_error():
    with pytest.raises(WorkerError, match=r"m: no JSON result .*: done"):
        run_json(py("print('done')"), "m")
