"""The allocator settings: freed tensor memory is reused instead of being faulted in again."""
import platform
import subprocess
import sys

import pytest

SCRIPT = """
import ctypes, resource, torch
from metadapt import allocator

def faults():
    x = torch.ones(4_000_000)                       # 16 MB
    for _ in range(3):
        y = x * 2
        del y
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        y = x * 2
        del y
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

# glibc's starting mmap threshold, 128 KiB, held fixed: its dynamic raise depends on the heap's history
ctypes.CDLL(None).mallopt(allocator.M_MMAP_THRESHOLD, 128 * 1024)
default = faults()
assert allocator.keep_freed_memory() and allocator.keep_freed_memory()   # idempotent
print(default, faults())
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_freed_memory_is_reused_not_faulted_in_again():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    default, kept = map(int, out.stdout.split())
    assert default > 20 * 3_000   # each fresh 16 MB block: about 3,900 pages faulted in
    assert kept < 100


def test_training_applies_the_setting_only_when_asked(tmp_path, monkeypatch):
    from metadapt.config import build_config
    from metadapt.training import trainer

    calls = []
    monkeypatch.setattr(trainer, "keep_freed_memory", lambda: calls.append(True) or True)
    for keep in ("true", "false"):
        config = build_config({"name": "t"}, ["train.iterations=1", "train.val_every=1", "train.val_tasks=2",
                                               "train.meta_batch_size=2", f"train.keep_freed_memory={keep}"])
        trainer.train(config, tmp_path / keep, progress=False)
    assert calls == [True]
