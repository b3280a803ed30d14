import json
import math

import pytest
import torch
from torch import nn

from metadapt.algorithms import MAML
from metadapt.config import build_config
from metadapt.evaluation import adaptation_curve, evaluate_run, mean_ci, steps_to_target
from metadapt.evaluation.report import comparison_table, speed_table
from metadapt.models import MLP
from metadapt.training import load, train


def test_mean_ci_matches_hand_computation():
    values = torch.tensor([[1.0], [2.0], [4.0], [5.0]])
    mean, ci = mean_ci(values)
    sd = math.sqrt(((1 - 3) ** 2 + (2 - 3) ** 2 + (4 - 3) ** 2 + (5 - 3) ** 2) / 3)
    assert mean.item() == 3.0 and ci.item() == pytest.approx(3.182446 * sd / 2)  # t(0.975, 3 dof)


def test_steps_to_target():
    assert steps_to_target([3.0, 0.9, 0.4], 1.0) == 1
    assert steps_to_target([3.0, 0.9, 0.4], 0.5) == 2
    assert steps_to_target([3.0, 2.0], 0.5) is None


def test_adaptation_curve_matches_per_task_adaptation(sine_batch64):
    torch.manual_seed(0)
    maml = MAML(MLP(1, [8], 1).double(), inner_lr=0.05)
    curve = adaptation_curve(maml, sine_batch64, steps=3, chunk=3)  # chunking must not matter
    assert curve.shape == (4, 4)
    for i in range(4):
        adapted = maml.adapt(sine_batch64.support_x[i], sine_batch64.support_y[i], steps=3)
        for k in range(4):
            expected = nn.functional.mse_loss(adapted.predict(sine_batch64.query_x[i], step=k),
                                              sine_batch64.query_y[i])
            torch.testing.assert_close(curve[i, k], expected)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    common = ["train.iterations=200", "train.meta_batch_size=10", "train.val_every=100", "train.val_tasks=20",
              "eval.tasks=30", "eval.shots=[5, 10]", "eval.queries=20", "eval.steps=10"]
    train(build_config(None, common + ["algorithm.name=maml", "train.meta_lr=0.003"]), root / "maml",
          progress=False)
    train(build_config(None, common + ["algorithm.name=pretrain"]), root / "pretrain", progress=False)
    return root


def test_evaluate_run_writes_results_figures_and_report(trained):
    run = load(trained / "maml")
    results = evaluate_run(run, [load(trained / "pretrain")], progress=False)
    assert set(results["settings"]) == {"5-shot", "10-shot"}
    methods = results["settings"]["5-shot"]["methods"]
    assert list(methods) == ["maml", "pretrain", "scratch"]
    assert len(methods["maml"]["mean"]) == 11 and results["settings"]["5-shot"]["tasks"] == 30
    # after 200 meta-iterations MAML already adapts better in one step than the pretrained net
    assert methods["maml"]["mean"][1] < methods["pretrain"]["mean"][1]
    saved = json.loads((trained / "maml" / "eval" / "results.json").read_text())
    assert (saved["settings"]["10-shot"]["methods"]["scratch"]["mean"]
            == results["settings"]["10-shot"]["methods"]["scratch"]["mean"])
    for png in ["adaptation_curves.png", "example_fits_5shot.png", "example_fits_10shot.png"]:
        data = (trained / "maml" / "plots" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    report = (trained / "maml" / "report.md").read_text()
    assert "| maml |" in report and "![Adaptation curves](plots/adaptation_curves.png)" in report
    assert "meta-iterations/s" in report
    assert "steps to MSE" in speed_table(results) and "5-shot (30 tasks), MSE" in comparison_table(results)


def test_same_test_tasks_for_every_method(trained):
    run = load(trained / "maml")
    a = evaluate_run(run, [], tasks=10, steps=2, progress=False)
    b = evaluate_run(run, [], tasks=10, steps=2, progress=False)
    assert (a["settings"]["5-shot"]["methods"]["maml"]["mean"]
            == b["settings"]["5-shot"]["methods"]["maml"]["mean"])


def test_diverged_curves_are_shown_as_such():
    results = {"metric": "mse", "steps": 1, "targets": [1.0], "settings": {"5-shot": {
        "tasks": 2, "queries": 3, "methods": {"metasgd": {
            "mean": [3.0, float("nan")], "ci95": [0.1, float("nan")], "steps_to_target": {"1.0": None}}}}}}
    assert "diverged" in comparison_table(results)


@pytest.mark.parametrize("n,t", [(2, 12.706), (3, 4.303), (10, 2.262), (30, 2.045), (101, 1.984)])
def test_intervals_are_student_t(n, t):
    from metadapt.evaluation.stats import mean_ci

    values = torch.randn(n, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    mean, half = mean_ci(values)
    assert abs(float(half) - t * float(values.std()) / n ** 0.5) < 1e-3 * float(half)


def test_the_paired_difference_resolves_what_separate_intervals_do_not():
    """Two methods whose scores vary a lot across tasks but differ by a steady 0.1: their separate
    intervals overlap, the paired interval of the difference excludes 0."""
    from metadapt.evaluation.stats import mean_ci, paired_difference

    g = torch.Generator().manual_seed(0)
    difficulty = torch.randn(40, generator=g, dtype=torch.float64)
    a, b = difficulty + 0.1 + 0.01 * torch.randn(40, generator=g, dtype=torch.float64), difficulty
    (ma, ca), (mb, cb) = mean_ci(a), mean_ci(b)
    assert ma - ca < mb + cb                      # the separate intervals overlap
    mean, half = paired_difference(a, b)
    assert abs(mean - 0.1) < 0.01 and mean - half > 0


def test_methods_without_steps_get_a_bar_chart_not_empty_curves(tmp_path, monkeypatch):
    import metadapt.evaluation.plots as plots

    results = {"metric": "accuracy", "steps": 0, "settings": {
        "5-way 1-shot": {"tasks": 50, "methods": {"protonet": {"mean": [0.91], "ci95": [0.02]},
                                                   "matching": {"mean": [0.88], "ci95": [0.03]}}},
        "20-way 1-shot": {"tasks": 50, "methods": {"protonet": {"mean": [0.71], "ci95": [0.02]},
                                                    "matching": {"mean": [0.62], "ci95": [0.03]}}}}}
    drawn = {}
    original = plots.plot_scores
    monkeypatch.setattr(plots, "plot_scores", lambda r, p: drawn.update(original(r, p)))
    plots.plot_adaptation_curves(results, tmp_path / "curves.png")
    assert drawn == {"protonet": pytest.approx([91.0, 71.0]), "matching": pytest.approx([88.0, 62.0])}
    assert (tmp_path / "curves.png").stat().st_size > 5000


def test_the_report_records_versions_commit_seed_and_every_compared_config(tmp_path):
    import yaml

    from metadapt.training.trainer import train as train_run

    runs = {}
    for name in ("maml", "pretrain"):
        settings = ["train.iterations=4", "train.meta_batch_size=2", "train.val_tasks=4", "model.hidden=[8]",
                    "eval.tasks=4", "eval.steps=1", "eval.shots=[5]", "eval.seed=77"]
        config = build_config(None, [f"algorithm.name={name}", *settings])
        train_run(config, tmp_path / name, progress=False)
        runs[name] = load(tmp_path / name)
    evaluate_run(runs["maml"], [runs["pretrain"]], progress=False)
    report = (tmp_path / "maml/report.md").read_text()
    section = report.split("## Provenance")[1]
    assert f"torch {torch.__version__}" in section and "source commit" in section
    assert "Evaluation seed 77" in section
    configs = [yaml.safe_load(block.split("```")[0]) for block in section.split("```yaml")[1:]]
    assert [c["algorithm"]["name"] for c in configs] == ["maml", "pretrain"]


def test_the_training_curve_shows_training_and_validation_against_iterations(tmp_path):
    from metadapt.evaluation.plots import plot_training_curve

    rows = [{"step": s, "split": "train", "query_loss": 2.0 / s, "iterations_per_second": 10.0}
            for s in (5, 10, 15, 20)]
    rows += [{"step": s, "split": "val", "query_loss": 1.5 / s, "accuracy": 0.5 + s / 100, "seconds": s / 10}
             for s in (10, 20)]
    series = plot_training_curve(rows, tmp_path / "curve.png", "run")
    assert series["train"] == [(5, 0.4), (10, 0.2), (15, 2.0 / 15), (20, 0.1)]
    assert series["val"] == [(10, 0.15), (20, 0.075)] and series["val_accuracy"] == [(10, 60.0), (20, 70.0)]
    assert (tmp_path / "curve.png").stat().st_size > 5000
    assert plot_training_curve(rows[:4], tmp_path / "none.png", "run") is None  # no validation rows


def test_a_report_of_metric_methods_has_no_inner_loop_text_and_targets_in_percent(tmp_path):
    from types import SimpleNamespace

    from metadapt.evaluation.report import speed_table

    results = {"metric": "accuracy", "steps": 0, "targets": [0.95], "seed": 1, "settings": {
        "5-way 1-shot": {"tasks": 50, "methods": {"protonet": {"mean": [0.91], "ci95": [0.02],
                                                                 "steps_to_target": {"0.95": None}}}}}}
    assert "steps to accuracy ≥ 95%" in speed_table(results)
    config = build_config(None, ["task.family=omniglot", "algorithm.name=protonet", "model.filters=4"])
    algorithm = SimpleNamespace(describe=lambda: "`protonet`", model=None, encoder=None)
    family = SimpleNamespace(describe=lambda: ["- Tasks: Omniglot."])
    run = SimpleNamespace(config=config, algorithm=algorithm, family=family, path=tmp_path, outputs=tmp_path,
                          compared=[])
    from metadapt.evaluation.report import write_report

    text = write_report(run, None, results, {}, {"protonet": algorithm}).read_text()
    assert "gradient" not in text.split("## Query")[1].split("##")[0].lower().replace("no gradient steps", "")
    assert "## Learning speed" not in text and "(no gradient steps)" in text


def test_example_episodes_put_queries_under_their_true_class_and_mark_mistakes(tmp_path):
    from types import SimpleNamespace

    from metadapt.evaluation.plots import plot_example_episodes
    from metadapt.tasks import TaskBatch

    ways, shots, queries = 3, 1, 2
    support_y = torch.arange(ways).repeat_interleave(shots).expand(1, -1)
    query_y = torch.arange(ways).repeat_interleave(queries).expand(1, -1)
    images = lambda n: torch.rand(1, n, 1, 28, 28)  # noqa: E731
    batch = TaskBatch(images(ways * shots), support_y, images(ways * queries), query_y)
    guesses = torch.tensor([[0, 1, 1, 1, 2, 0]])  # the 2nd and the 6th query are wrong

    class Adapted:
        def predict(self, x):
            return torch.nn.functional.one_hot(guesses, ways).float()

    algorithm = SimpleNamespace(parameters=lambda: iter([torch.zeros(1)]), name="stub",
                                name_in_config=None, adapt_tasks=lambda sx, sy: Adapted())
    shown = plot_example_episodes(algorithm, batch, tmp_path / "episodes.png", num_episodes=1,
                                  queries_shown=6)
    assert shown[0] == [(0, 0), (0, 1), (1, 1), (1, 1), (2, 2), (2, 0)]
    assert (tmp_path / "episodes.png").stat().st_size > 5000
