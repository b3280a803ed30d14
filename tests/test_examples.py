import importlib.util
from pathlib import Path

EXAMPLE = Path(__file__).parent.parent / "examples" / "bring_your_own.py"


def test_bring_your_own_example_runs_and_adapts(capsys):
    spec = importlib.util.spec_from_file_location("bring_your_own", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(300)
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("new task")]
    mse = [float(l.rsplit(" ", 1)[1]) for l in lines]
    assert len(mse) == 3 and mse[2] < mse[0]
