"""Where PyTorch runs: the recipe's `device` (auto | cpu | cuda | cuda:N) as a torch.device.

    device = torch_device(recipe.device)    # auto: the first CUDA GPU torch sees, else the CPU
    batch = to_device(batch, device)        # tensors of a dict moved, other values kept

The local teacher (input writing, answers, layer choice, pruning importance) and the student
(training, baselines, evaluation) run there; the student is built on the CPU from the teacher's
weights and moved. Data files, checkpoints and the saved student are the same on every device.
"""

from __future__ import annotations

import os

from edgestill.errors import UserError


def torch_device(spec: str = "auto"):
    """`spec` as a torch.device (a GPU with its index); a UserError when it asks for a GPU this
    torch cannot use."""
    import torch

    if spec == "cpu" or (spec == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if spec == "auto":
        return torch.device("cuda", 0)
    if not torch.cuda.is_available():
        raise UserError(f"device: {spec!r} asked, but this torch ({torch.__version__}) sees no CUDA GPU; "
                        "set device=cpu (or auto), or install a CUDA build of torch")
    index = int(spec.split(":")[1]) if ":" in spec else 0
    if index >= torch.cuda.device_count():
        raise UserError(f"device: {spec!r} asked, but torch sees {torch.cuda.device_count()} CUDA GPU(s) "
                        f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    return torch.device("cuda", index)


def select_device(spec: str = "auto"):
    """`torch_device(spec)`, made this process's current CUDA device when it is a GPU and the run
    is one process (`accelerate launch` gives each process its own GPU)."""
    import torch

    device = torch_device(spec)
    if device.type == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        torch.cuda.set_device(device)
    return device


def process_state(spec: str = "auto"):
    """accelerate's PartialState (this process's rank, count and device) on `spec`'s device.

    accelerate keeps the device of the first state made in a process. A process that runs
    recipes for different devices one after another (tests, a notebook) would otherwise train the
    second on the first one's device, or fail; so a single process on another device starts a
    new state (accelerate's own reset, as its test suite does)."""
    from accelerate.state import AcceleratorState, PartialState

    device = select_device(spec)
    if PartialState._shared_state and PartialState().num_processes == 1 \
            and PartialState().device.type != device.type:
        AcceleratorState._reset_state(reset_partial_state=True)
    return PartialState(cpu=device.type == "cpu")


def to_device(batch: dict, device) -> dict:
    """`batch` with its tensors on `device` (non-blocking where the copy allows it)."""
    import torch

    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
