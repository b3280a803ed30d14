"""scripts/bandit_discount.py: the index policies play the tasks they are given with the stated draws,
and the discounted index for γ near 1 does about as well as the finite-horizon one."""
from importlib.util import module_from_spec, spec_from_file_location
from pathlib import Path

import torch

SCRIPT = Path(__file__).parent.parent / "scripts/bandit_discount.py"
spec = spec_from_file_location("bandit_discount", SCRIPT)
script = module_from_spec(spec)
spec.loader.exec_module(script)


def test_a_fixed_arm_earns_exactly_its_draws():
    probs = torch.rand(50, 3, generator=torch.Generator().manual_seed(0))
    always_second = lambda a, b, t: torch.tensor([0.0, 1.0, 0.0]).expand(a.shape)  # noqa: E731
    total = script.play(always_second, probs, 7, seed=3)
    draws = torch.rand(7, 50, 3, generator=torch.Generator().manual_seed(3))
    assert torch.equal(total, (draws[:, :, 1] < probs[:, 1]).float().sum(0))


def test_posterior_counts_reach_the_index():
    seen = []

    def index(a, b, t):
        seen.append((a - 1 + b - 1).sum(-1))  # pulls so far per task, from the Beta parameters
        return torch.zeros(a.shape)

    script.play(index, torch.rand(4, 2, generator=torch.Generator().manual_seed(1)), 5, seed=0)
    assert [int(x[0]) for x in seen] == [0, 1, 2, 3, 4] and all(torch.equal(x, x[:1].expand(4)) for x in seen)


def test_prints_each_policy_s_mean_total_on_the_same_tasks(capsys):
    from metadapt.algorithms.rl.gittins import finite_horizon_gittins

    script.main(["--tasks", "300", "--pulls", "10", "--gammas", "0.9"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[1].startswith("Gittins for γ = 0.9")
    table = finite_horizon_gittins(10)
    probs = torch.rand(300, 5, generator=torch.Generator().manual_seed(0))
    optimal = script.play(lambda a, b, t: table[a, b, 10 - t], probs, 10, seed=1)
    assert float(lines[0].split()[-3]) == round(optimal.mean().item(), 2)
