"""The allocator settings: freed tensor memory is reused instead of being faulted in again."""
import platform
import subprocess
import sys

import pytest

SCRIPT = """
import resource, sys, torch
if sys.argv[1] == "keep":
    from metadapt.allocator import keep_freed_memory
    assert keep_freed_memory() and keep_freed_memory()  # idempotent
x = torch.ones(4_000_000)                                # 16 MB, above glibc's starting mmap threshold
for _ in range(3):
    y = x * 2
    del y
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    y = x * 2
    del y
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_freed_memory_is_reused_not_faulted_in_again():
    default, kept = faults("default"), faults("keep")
    # by default glibc trims the freed block and faults (part of) it in again on every allocation
    assert default > 5_000
    assert kept < default / 10


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
