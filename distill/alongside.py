"""Train the SFT baseline in a forked process while the student trains, one CPU thread each.

    from edgestill.distill.alongside import Alongside, one_thread, wanted
    if wanted(recipe.distill.baselines, processes=1, hidden_states=0.0):
        side = Alongside(lambda: train(...baseline...), summary_file)   # starts the child
        with one_thread():
            train(...student...)
        summary = side.join()                                            # the child's train() summary

Small models use a second thread poorly, so two one-thread trainings side by side finish
sooner than one after the other on two threads (docs/log.md).
Both use their own checkpoint folder, so a killed run resumes each where it stopped. The child
dies with its parent (PR_SET_PDEATHSIG), so a killed run leaves no orphan writing checkpoints.
The fork start method is used on purpose: the child inherits the built baseline model, the
tokenized examples and the progress bars without pickling them.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
import sys
from pathlib import Path
from typing import Callable

import torch

from edgestill.files import atomic_write_json


def wanted(baselines: list[str], processes: int, hidden_states: float) -> bool:
    """Whether to train the SFT baseline alongside: it is asked for, this is a single-process run
    (not `accelerate launch`), no teacher runs at train time, there are at least 2 cores, and
    torch sees no CUDA GPU. (Once the parent has asked the CUDA driver anything, a forked child's
    first CUDA call fails, and torch's optimizers make one even on the CPU: seen on an H100
    machine with `device: cpu`. There the baseline trains after the student.)"""
    return ("sft" in baselines and processes == 1 and hidden_states <= 0 and sys.platform == "linux"
            and len(os.sched_getaffinity(0)) >= 2 and not torch.cuda.is_available())


@contextlib.contextmanager
def one_thread():
    """torch on one intra-op thread inside the block, as many as before after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Alongside:
    """`work()` (returns a JSON-able summary) running in a forked child on one thread."""

    def __init__(self, work: Callable[[], dict], summary_file: Path):
        self.summary_file = Path(summary_file)
        self.summary_file.unlink(missing_ok=True)
        self.parent = os.getpid()
        self.process = multiprocessing.get_context("fork").Process(target=self._child, args=(work,), daemon=True)
        self.process.start()

    def _child(self, work: Callable[[], dict]) -> None:
        _die_with_parent(self.parent)
        torch.set_num_threads(1)
        atomic_write_json(self.summary_file, work())

    def join(self) -> dict:
        """Wait for the child; its summary, or RuntimeError if it failed."""
        self.process.join()
        if self.process.exitcode != 0 or not self.summary_file.is_file():
            raise RuntimeError(f"the SFT baseline's training process failed (exit code {self.process.exitcode}); "
                               "its log is above; run the same command again to resume")
        return json.loads(self.summary_file.read_text())


def _die_with_parent(parent: int) -> None:
    """Ask Linux to kill this process when its parent dies (prctl PR_SET_PDEATHSIG)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
