"""`metadapt` CLI whose Nth checkpoint write is torn: half a file, then SIGKILL (for tests)."""
import os
import signal
import sys

import torch

import metadapt.training.checkpoint as checkpoint
from metadapt.cli import main

KILL_AT = int(os.environ.get("KILL_AT_SAVE", "0"))
calls = 0
original = torch.save


def torn_save(obj, f, *args, **kwargs):
    global calls
    calls += 1
    if calls == KILL_AT:
        f.write(b"PK\x03\x04 torn checkpoint")
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return original(obj, f, *args, **kwargs)


checkpoint.torch.save = torn_save
sys.exit(main(sys.argv[1:]))
