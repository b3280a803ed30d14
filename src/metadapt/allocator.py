"""Keep freed CPU memory in the process instead of handing it back to the kernel every step.

PyTorch allocates CPU tensors with the C library's ``malloc``. glibc serves a request above its
mmap threshold (128 KiB at start, raised dynamically up to 32 MiB) with a fresh ``mmap`` and
returns it with ``munmap`` when the tensor dies, and trims freed memory at the top of its heap
above 128 KiB. A meta-training step allocates and frees the same activations every iteration, so
every step faults its pages in again and the kernel zeroes each one: measured on the Conv-4 MAML
step here (32 tasks, 5 + 75 images), 29,000 to 359,000 minor page faults per step, depending on
how far glibc has raised its thresholds, and 3-21% of the step's time (``benchmarks/allocator.py``).
CUDA has PyTorch's caching allocator for exactly this; on CPU the same effect comes from two
``mallopt`` settings:

* ``M_MMAP_THRESHOLD`` = 32 MiB (glibc's largest): blocks below it come from the heap, reused;
* ``M_TRIM_THRESHOLD`` = 1 GiB: up to that much freed memory stays mapped for the next step.

Peak memory is unchanged; the resident size simply stays at the peak between steps, as a caching
allocator's does. The settings are process-wide, so only the entry points that own the process
apply them: the trainer (:func:`metadapt.training.train`, hence ``metadapt train`` and ``demo``) and
``metadapt eval``; ``train.keep_freed_memory=false`` leaves the C library's defaults alone. On C
libraries other than glibc nothing is changed.
"""
from __future__ import annotations

import ctypes
import platform

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 2**30

_applied = False


def keep_freed_memory() -> bool:
    """Apply the two ``mallopt`` settings above (once per process); ``True`` if they are in force."""
    global _applied
    if _applied:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = (bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
                and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)))
    return _applied
