"""A replay buffer per task, all in one tensor: ``data [tasks, capacity, width]`` with a fill count and
a write position per task (first in, first out once full). Adding to and sampling from many tasks is
one indexing operation; the buffer's tensors are its state, saved in checkpoints with the run."""
from __future__ import annotations

import torch


class TaskReplay:
    """Transitions (rows of ``width`` numbers) of ``tasks`` tasks, at most ``capacity`` per task."""

    def __init__(self, tasks: int, capacity: int, width: int, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32):
        self.data = torch.zeros(tasks, capacity, width, device=device, dtype=dtype)
        self.size = torch.zeros(tasks, dtype=torch.long, device=device)
        self.position = torch.zeros(tasks, dtype=torch.long, device=device)

    @property
    def capacity(self) -> int:
        return self.data.shape[1]

    def add(self, tasks: torch.Tensor, rows: torch.Tensor) -> None:
        """Append ``rows [len(tasks), n, width]`` to the buffers of ``tasks`` (distinct task indices)."""
        n = rows.shape[1]
        if n == 0:
            return
        tasks = tasks.to(self.data.device)
        if n > self.capacity:  # only the newest fit
            rows, n = rows[:, -self.capacity:], self.capacity
        slots = (self.position[tasks, None] + torch.arange(n, device=self.data.device)) % self.capacity
        self.data[tasks[:, None], slots] = rows.to(self.data)
        self.position[tasks] = (self.position[tasks] + n) % self.capacity
        self.size[tasks] = (self.size[tasks] + n).clamp(max=self.capacity)

    def clear(self, tasks: torch.Tensor) -> None:
        tasks = tasks.to(self.data.device)
        self.size[tasks] = 0
        self.position[tasks] = 0

    def sample(self, tasks: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
        """``[len(tasks), count, width]``: ``count`` rows drawn uniformly with replacement from each of
        ``tasks``' buffers (which must not be empty)."""
        tasks = tasks.to(self.data.device)
        sizes = self.size[tasks]
        if bool((sizes == 0).any()):
            raise RuntimeError("sampling from an empty replay buffer")
        u = torch.rand(len(tasks), count, generator=generator, dtype=torch.float64).to(self.data.device)
        index = (u * sizes[:, None]).long().clamp(max=self.capacity - 1)  # rows 0 … size − 1 hold data
        return self.data[tasks[:, None], index]

    def sample_episodes(self, tasks: torch.Tensor, episodes: int, length: int,
                        generator: torch.Generator) -> torch.Tensor:
        """``[len(tasks), episodes · length, width]``: the rows of ``episodes`` distinct whole episodes
        of each of ``tasks``' buffers, drawn uniformly. Episodes are the aligned blocks of ``length``
        rows, which they are when every addition is whole episodes of ``length`` steps and the
        capacity a multiple of it."""
        if self.capacity % length:
            raise ValueError(f"a capacity of {self.capacity} does not hold whole episodes of {length} steps")
        tasks = tasks.to(self.data.device)
        complete = self.size[tasks] // length
        if bool((complete < episodes).any()):
            raise RuntimeError(f"a replay buffer holds fewer than {episodes} whole episodes")
        slots = self.capacity // length
        scores = torch.rand(len(tasks), slots, generator=generator, dtype=torch.float64).to(self.data.device)
        scores = scores.masked_fill(torch.arange(slots, device=self.data.device) >= complete[:, None], 2.0)
        which = scores.argsort(-1)[:, :episodes]                       # distinct episodes, uniformly
        index = (which[..., None] * length + torch.arange(length, device=self.data.device)).flatten(1)
        return self.data[tasks[:, None], index]

    def state_dict(self) -> dict:
        return {"data": self.data, "size": self.size, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        for name in ("data", "size", "position"):
            value = state[name]
            current = getattr(self, name)
            if value.shape != current.shape or value.dtype != current.dtype:
                raise ValueError(f"replay buffer {name}: {tuple(value.shape)} {value.dtype} in the "
                                 f"checkpoint, {tuple(current.shape)} {current.dtype} in this run")
            current.copy_(value)
