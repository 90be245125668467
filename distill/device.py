"""Where PyTorch runs: the recipe's `device` (auto | cpu | cuda | cuda:N) as a torch.device.

    device = torch_device(recipe.device)    # auto: the first CUDA GPU torch sees, else the CPU
    batch = to_device(batch, device)        # tensors of a dict moved, other values kept
    precision = train_precision("auto", device)   # "bf16" where the hardware has bf16, else "fp32"

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


def native_bf16(device) -> bool:
    """Whether `device` computes bf16 matmuls natively: a CUDA GPU with bf16, or a CPU with
    AVX512-BF16 or AMX (elsewhere torch emulates bf16 on the CPU, slower than fp32)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private torch helpers: guarded
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def train_precision(spec: str, device) -> str:
    """The recipe's `distill.precision` resolved: auto is bf16 where `native_bf16(device)`, else fp32
    (bf16 autocast trains the default student about 1.7x faster there: docs/log.md)."""
    if spec != "auto":
        return spec
    return "bf16" if native_bf16(device) else "fp32"


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


def accelerator(device, precision: str):
    """accelerate's Accelerator on `device` with `precision` (bf16: autocast, else none).

    Like the device, accelerate keeps the mixed precision of the first Accelerator of a process
    and refuses another; a single process that trains in another precision than before (tests, a
    notebook) starts a new AcceleratorState (its PartialState, the processes, is kept)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    mixed = "bf16" if precision == "bf16" else "no"
    if AcceleratorState._shared_state and AcceleratorState().num_processes == 1 \
            and AcceleratorState().mixed_precision != mixed:
        AcceleratorState._reset_state()
    return Accelerator(cpu=device.type == "cpu", mixed_precision=mixed)


def to_device(batch: dict, device) -> dict:
    """`batch` with its tensors on `device` (non-blocking where the copy allows it)."""
    import torch

    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
