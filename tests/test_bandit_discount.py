"""scripts/bandit_discount.py: the discounted index ignores the pulls left, plays like greedy when γ = 0,
and the script prints each policy's mean over the same tasks."""
from importlib.util import module_from_spec, spec_from_file_location
from pathlib import Path

import torch

from metadapt.algorithms.rl.bandit_strategies import Gittins, Greedy
from metadapt.algorithms.rl.gittins import discounted_gittins

SCRIPT = Path(__file__).parent.parent / "scripts/bandit_discount.py"
spec = spec_from_file_location("bandit_discount", SCRIPT)
script = module_from_spec(spec)
spec.loader.exec_module(script)


def test_the_discounted_table_is_the_same_index_for_every_number_of_pulls_left():
    table = script.discounted_table(12, 0.9)
    assert table.shape == (15, 15, 13)
    assert all(torch.equal(table[..., m], discounted_gittins(15, 0.9, depth=400)) for m in range(13))
    strategy = Gittins(3, torch.Generator().manual_seed(0), table)
    pulls, wins = torch.tensor([[[4.0, 2.0, 5.0]]]), torch.tensor([[[3.0, 0.0, 2.0]]])
    expected = table[(wins + 1).long(), (pulls - wins + 1).long(), 0].argmax(-1)
    assert all(torch.equal(strategy.choose(pulls, wins, t), expected) for t in (0, 5, 11))


def test_with_no_future_the_discounted_index_plays_exactly_as_greedy():
    greedy = script.totals(lambda g: Greedy(4, g), 400, 4, 15)
    myopic = script.totals(lambda g: Gittins(4, g, script.discounted_table(15, 0.0)), 400, 4, 15)
    assert torch.equal(myopic, greedy) and greedy.mean() > 0.5 * 15  # better than random's ~7.5


def test_prints_each_policy_s_mean_total_on_the_same_tasks(capsys):
    from metadapt.evaluation.stats import mean_ci

    script.main(["--tasks", "300", "--pulls", "10", "--gammas", "0.9"])
    lines = capsys.readouterr().out.splitlines()
    assert [line[:48].strip() for line in lines] == list(script.policies(5, 10, [0.9]))
    for line, make in zip(lines, script.policies(5, 10, [0.9]).values()):
        mean, half = mean_ci(script.totals(make, 300, 5, 10))
        assert line.split()[-3:] == [f"{float(mean):.2f}", "±", f"{float(half):.2f}"]
