"""RL²: the hidden state lives for the whole trial, acting and training see the same numbers, PPO's
loss matches a hand computation, and a run resumes to the same parameters."""
import json
import math

import pytest
import torch

from metadapt.algorithms.rl import RL2
from metadapt.config import build_config
from metadapt.envs import BanditFamily, TabularMDPFamily
from metadapt.envs.bandits import BanditOptions
from metadapt.envs.tabular import TabularOptions
from metadapt.errors import UserError
from metadapt.experience import rollout
from metadapt.models import RecurrentPolicy
from metadapt.training import load, train
from metadapt.training.ppo import ppo_loss

SMALL = ["task.family=bandits", "model.name=recurrent-policy", "model.hidden=16", "algorithm.name=rl2",
         "train.meta_batch_size=16", "train.val_tasks=20", "train.val_every=10", "train.checkpoint_every=10",
         "train.log_every=5", "eval.tasks=20"]


def small(iterations, *extra):
    return build_config(None, SMALL + [f"train.iterations={iterations}", *extra])


def mdp_agent(hidden=32, episodes=3, critic="shared", cell="gru"):
    torch.manual_seed(0)
    return RL2(RecurrentPolicy(10, 5, hidden, critic, cell=cell), episodes=episodes)


def assert_stepping_equals_the_sequence(model, inputs, logits, values, hidden, task=None):
    """Acting one step at a time, every state carried, gives the whole sequence's outputs and state."""
    state, steps = None, []
    for t in range(inputs.shape[1]):
        step_logits, step_values, state = model.step(inputs[:, t], state, task)
        steps.append((step_logits, step_values))
    assert torch.allclose(torch.stack([s[0] for s in steps], 1), logits, atol=1e-6)
    assert torch.allclose(torch.stack([s[1] for s in steps], 1), values, atol=1e-6)
    assert torch.allclose(state, hidden, atol=1e-6)


@pytest.mark.parametrize("critic, cell", [("shared", "gru"), ("separate", "gru"), ("shared", "lstm"),
                                          ("separate", "lstm")])
def test_hidden_state_is_carried_across_the_episodes_of_a_trial(critic, cell):
    agent = mdp_agent(critic=critic, cell=cell)
    env = TabularMDPFamily(TabularOptions(horizon=4, episodes=3)).sample(6, torch.Generator().manual_seed(1))
    traj = agent.play(env, torch.Generator().manual_seed(2), trials=2).trials()
    # log-probabilities recorded while acting = those of the whole trial read from a zero hidden state
    logits, values, _ = agent.policy(agent.sequence_inputs(traj))
    recorded = traj.extras["log_prob"].flatten(0, 1)
    recomputed = torch.log_softmax(logits, -1).gather(-1, traj.actions.flatten(0, 1)[..., None])[..., 0]
    assert torch.allclose(recorded, recomputed, atol=1e-5)
    assert torch.allclose(traj.extras["value"].flatten(0, 1), values, atol=1e-5)
    # had the hidden state been reset at the start of episode 2, its first step would read differently
    inputs = agent.sequence_inputs(traj)
    reset_logits, _, _ = agent.policy(inputs[:, 4:])
    assert not torch.allclose(reset_logits[:, 0], logits[:, 4], atol=1e-3)
    # and the previous step's done flag (end of episode 1) is what the first step of episode 2 reads
    assert torch.all(inputs[:, 4, -1] == 1) and torch.all(inputs[:, 1:4, -1] == 0)


def test_a_separate_critic_has_its_own_gru_and_leaves_the_shared_model_unchanged():
    shared, separate = mdp_agent().policy, mdp_agent(critic="separate").policy
    for name, weight in shared.state_dict().items():  # same draws for every weight the two share
        assert torch.equal(weight, separate.state_dict()[name]), name
    inputs = torch.randn(4, 6, 17)
    logits, values, hidden = separate(inputs)
    assert hidden.shape == (1, 4, 64)
    assert torch.allclose(logits, shared(inputs)[0])  # the policy reads only its own GRU
    assert not torch.allclose(values, shared(inputs)[1])
    values.sum().backward()  # the value's gradient reaches only the critic's GRU and the value head
    assert all(p.grad is None for p in [*separate.gru.parameters(), *separate.policy.parameters()])
    assert all(p.grad is not None for p in [*separate.critic_gru.parameters(), *separate.value.parameters()])
    assert_stepping_equals_the_sequence(separate, inputs, logits, values, hidden)


@pytest.mark.parametrize("critic", ["shared", "separate", "task"])
def test_an_lstm_cell_carries_h_and_c_side_by_side_and_acting_equals_the_whole_sequence(critic):
    torch.manual_seed(0)
    model = RecurrentPolicy(1, 5, 16, critic, 8 if critic != "shared" else 0, cell="lstm")
    if critic == "task":
        model.know_task(5)
    assert isinstance(model.lstm, torch.nn.LSTM) and not hasattr(model, "gru")
    assert torch.all(model.lstm.bias_ih_l0[16:32] == 1) and torch.all(model.lstm.bias_hh_l0[16:32] == 0)
    assert torch.all(model.lstm.bias_ih_l0[:16] != 1)  # only the forget gates' biases are set
    inputs, task = torch.randn(3, 7, 8), (torch.rand(3, 5) if critic == "task" else None)
    logits, values, hidden = model(inputs, task=task)
    width = 2 * 16 + (0 if critic == "shared" else 2 * 8)
    assert hidden.shape == (1, 3, width)
    out, (h, c) = model.lstm(inputs)  # the policy's part of the state is the LSTM's (h, c), side by side
    assert torch.allclose(hidden[..., :32], torch.cat([h, c], -1))
    assert torch.allclose(logits, model.policy(out))
    assert_stepping_equals_the_sequence(model, inputs, logits, values, hidden, task)
    half_logits, _, half_state = model(inputs[:, :3], task=task)  # a state carried between calls
    rest_logits, _, rest_state = model(inputs[:, 3:], half_state, task=task)
    assert torch.allclose(torch.cat([half_logits, rest_logits], 1), logits, atol=1e-6)
    assert torch.allclose(rest_state, hidden, atol=1e-6)


def test_an_lstm_run_reloads_with_its_cell(tmp_path):
    train(small(2, "model.cell=lstm", "model.critic=task"), tmp_path / "run", progress=False)
    policy = load(tmp_path / "run").algorithm.policy
    assert policy.cell == "lstm" and policy.critic_lstm.input_size == policy.lstm.input_size + 5
    assert "an LSTM of 16 units" in policy.describe()


def test_task_features_are_each_task_s_defining_fields():
    from metadapt.envs import NavigationFamily
    from metadapt.envs.navigation import NavigationOptions

    g = torch.Generator().manual_seed(0)
    bandits = BanditFamily(BanditOptions(arms=3, pulls=5)).sample(4, g)
    assert torch.equal(bandits.task_features(), bandits.probs)
    mdp = TabularMDPFamily(TabularOptions(horizon=4, episodes=2)).sample(4, g)
    assert mdp.task_features().shape == (4, 10 * 5 + 10 * 5 * 10)
    expected = torch.cat([mdp.reward_means.flatten(1), mdp.transitions.flatten(1)], 1)
    assert torch.equal(mdp.task_features(), expected)
    nav = NavigationFamily(NavigationOptions()).sample(4, g)
    assert torch.equal(nav.task_features(), nav.goals)


def test_a_task_critic_reads_the_task_in_its_value_only():
    shared = mdp_agent().policy
    torch.manual_seed(0)
    model = RecurrentPolicy(10, 5, 32, "task")
    with pytest.raises(ValueError, match="know_task"):
        model(torch.randn(2, 3, 17), task=torch.randn(2, 7))
    model.know_task(7)
    for name, weight in shared.state_dict().items():  # same draws for every weight shared with the recipe
        assert torch.equal(weight, model.state_dict()[name]), name
    inputs, task = torch.randn(4, 6, 17), torch.randn(4, 7)
    with pytest.raises(ValueError, match="task="):
        model(inputs)
    logits, values, hidden = model(inputs, task=task)
    other_logits, other_values, _ = model(inputs, task=task + 1)
    assert torch.equal(logits, other_logits) and torch.allclose(logits, shared(inputs)[0])  # acts on history
    assert not torch.allclose(values, other_values)  # the value depends on the task
    values.sum().backward()
    assert all(p.grad is None for p in [*model.gru.parameters(), *model.policy.parameters()])
    assert model.critic_gru.weight_ih_l0.grad[:, -7:].abs().sum() > 0  # through the task's input columns
    assert_stepping_equals_the_sequence(model, inputs, logits, values, hidden, task)


def test_a_smaller_critic_gru_carries_its_own_state_and_leaves_the_policy_unchanged():
    torch.manual_seed(0)
    shared = RecurrentPolicy(10, 5, 32)
    torch.manual_seed(0)
    model = RecurrentPolicy(10, 5, 32, "task", critic_hidden=8)
    model.know_task(7)
    assert model.critic_gru.hidden_size == 8 and model.value.in_features == 8
    for name in ("gru.weight_ih_l0", "gru.weight_hh_l0", "policy.weight", "policy.bias"):
        assert torch.equal(shared.state_dict()[name], model.state_dict()[name]), name
    inputs, task = torch.randn(3, 5, 17), torch.randn(3, 7)
    logits, values, hidden = model(inputs, task=task)
    assert hidden.shape == (1, 3, 40) and torch.allclose(logits, shared(inputs)[0])
    state, steps = None, []
    for t in range(5):
        step_logits, step_values, state = model.step(inputs[:, t], state, task)
        steps.append(step_values)
    assert torch.allclose(torch.stack(steps, 1), values, atol=1e-6)
    assert torch.allclose(state, hidden, atol=1e-6)


def test_critic_hidden_without_a_critic_of_its_own_is_refused():
    with pytest.raises(UserError, match="model.critic=separate"):
        RL2.check_config(small(2, "model.critic_hidden=8"))


def test_a_task_critic_s_recorded_values_are_those_training_recomputes_with_each_trial_s_own_task():
    torch.manual_seed(0)
    policy = RecurrentPolicy(10, 5, 32, "task")
    policy.know_task(550)
    agent = RL2(policy, episodes=3, trials=2)
    env = TabularMDPFamily(TabularOptions(horizon=4, episodes=3)).sample(5, torch.Generator().manual_seed(1))
    batch = agent.experience(env, torch.Generator().manual_seed(2))
    assert torch.equal(batch["task"], env.task_features().repeat_interleave(2, 0))  # trial 2·i + j: task i
    index = torch.arange(10)
    log_probs, _, values = agent.evaluate_actions(batch, index)
    assert torch.allclose(log_probs, batch["log_probs"], atol=1e-5)
    assert torch.allclose(values, batch["values"], atol=1e-5)
    shuffled = dict(batch, task=batch["task"].flip(0))  # another task's description gives other values
    assert not torch.allclose(agent.evaluate_actions(shuffled, index)[2], batch["values"], atol=1e-3)


def test_a_task_critic_is_sized_for_the_family_s_tasks_and_reloads(tmp_path):
    train(small(2, "model.critic=task"), tmp_path / "run", progress=False)
    policy = load(tmp_path / "run").algorithm.policy  # rebuilt from the run's config, weights loaded
    assert policy.critic_gru.input_size == policy.gru.input_size + 5  # the bandits' five probabilities


def test_each_trial_starts_from_a_zero_hidden_state_and_no_previous_step():
    agent = mdp_agent()
    env = BanditFamily(BanditOptions(arms=5, pulls=6)).sample(3, torch.Generator().manual_seed(0))
    agent.policy = RecurrentPolicy(1, 5, 8)
    agent.episodes = 1
    seen = []
    act = agent.actor(torch.Generator().manual_seed(0))

    def spy(obs, last, hidden):
        seen.append(hidden)
        return act(obs, last, hidden)

    rollout(env, spy, 2, 1, torch.Generator().manual_seed(0))
    assert seen[0] is None and all(h is not None for h in seen[1:])
    inputs = agent.sequence_inputs(agent.play(env, torch.Generator().manual_seed(0)).trials())
    assert torch.count_nonzero(inputs[:, 0, 1:]) == 0  # no previous action, reward or done


def test_time_input_is_the_share_of_the_trial_elapsed_and_acting_reads_what_training_recomputes():
    torch.manual_seed(0)
    agent = RL2(RecurrentPolicy(10 + 1, 5, 32, "task"), episodes=3, trials=2, time_input=True)
    agent.policy.know_task(550)
    env = TabularMDPFamily(TabularOptions(horizon=4, episodes=3)).sample(5, torch.Generator().manual_seed(1))
    batch = agent.experience(env, torch.Generator().manual_seed(2))
    # the input after the observation's ten entries: 0, 1/12, …, 11/12 across the three episodes
    assert torch.equal(batch["inputs"][:, :, 10], (torch.arange(12) / 12).expand(10, 12))
    log_probs, _, values = agent.evaluate_actions(batch, torch.arange(10))
    assert torch.allclose(log_probs, batch["log_probs"], atol=1e-5)  # each trial's clock restarts at 0
    assert torch.allclose(values, batch["values"], atol=1e-5)
    stopped = dict(batch, inputs=batch["inputs"].index_fill(2, torch.tensor([10]), 0.0))
    assert not torch.allclose(agent.evaluate_actions(stopped, torch.arange(10))[2], values, atol=1e-4)


def test_time_input_sizes_the_model_and_reloads(tmp_path):
    train(small(2, "algorithm.time_input=true"), tmp_path / "run", progress=False)
    run = load(tmp_path / "run")
    assert run.algorithm.time_input and run.algorithm.policy.gru.input_size == 1 + 1 + 5 + 2


def test_weight_average_is_the_warmed_up_moving_average_and_acts_only_outside_training():
    import copy

    torch.manual_seed(0)
    agent = RL2(RecurrentPolicy(1, 5, 8), episodes=1, trials=1, weight_average=0.9)
    plain = RL2(RecurrentPolicy(1, 5, 8))
    assert not any(k.startswith("average") for k in plain.state_dict())  # off: checkpoints as before
    parameters = list(agent.policy.parameters())
    expected = [p.detach().clone() for p in parameters]                  # θ̄ starts at the initial weights
    for k in range(100):
        with torch.no_grad():
            for p in parameters:
                p.add_(torch.randn(p.shape))
        agent.after_update()
        decay = min(0.9, (1 + k) / (10 + k))                             # 0.1, 0.18, … then 0.9 from k = 80
        expected = [decay * e + (1 - decay) * p.detach() for e, p in zip(expected, parameters)]
    assert int(agent.average_updates) == 100
    for average, e in zip(agent.averaged_weights(), expected):
        assert torch.allclose(average, e, atol=1e-5)
    env = BanditFamily(BanditOptions(arms=5, pulls=20)).sample(30, torch.Generator().manual_seed(0))
    live = [p.detach().clone() for p in parameters]
    with_average, with_live = copy.deepcopy(agent), copy.deepcopy(agent)
    with torch.no_grad():
        for p, a in zip(with_average.policy.parameters(), agent.averaged_weights()):
            p.copy_(a)
    with_average.weight_average = with_live.weight_average = 0.0
    played = lambda a, **kw: a.play(env, torch.Generator().manual_seed(3), **kw).actions  # noqa: E731
    assert torch.equal(played(agent), played(with_average))             # validation and test: θ̄
    assert torch.equal(played(agent, averaged=False), played(with_live))  # training's trials: θ
    assert not torch.equal(played(agent), played(agent, averaged=False))
    assert all(torch.equal(p, q) for p, q in zip(parameters, live))      # θ is put back bit for bit
    batch = agent.experience(env, torch.Generator().manual_seed(3))
    assert torch.equal(batch["actions"], played(with_live).reshape(batch["actions"].shape))


def test_a_weight_averaged_run_checkpoints_the_average_and_validates_with_it(tmp_path):
    train(small(20, "algorithm.weight_average=0.95"), tmp_path / "run", progress=False)
    run = load(tmp_path / "run", "last")
    state = run.algorithm.state_dict()
    assert int(state["average_updates"]) == 20
    averaged = [state[f"average_{i}"] for i in range(len(list(run.algorithm.policy.parameters())))]
    assert not all(torch.equal(a, p) for a, p in zip(averaged, run.algorithm.policy.parameters()))
    val = [r for r in run.metrics() if r["split"] == "val"][-1]
    assert val["return"] == pytest.approx(run.algorithm.validation_metrics(
        run.family.tasks("val").sample(20, torch.Generator().manual_seed(10_007)))["return"])


def test_ppo_loss_by_hand():
    lp = torch.tensor([math.log(0.5), math.log(0.2)])
    old = torch.tensor([math.log(0.4), math.log(0.4)])
    adv = torch.tensor([1.0, -1.0])
    values, returns = torch.tensor([0.0, 1.0]), torch.tensor([1.0, 1.0])
    entropy, mask = torch.tensor([0.3, 0.5]), torch.ones(2)
    loss, stats = ppo_loss(lp, old, adv, values, returns, entropy, mask, clip=0.2, value_coef=0.5,
                           entropy_coef=0.1)
    # normalised advantages: (±1 − 0) / std([1, −1]) = ±1/√2; ratios 1.25 → clipped 1.2, and 0.5 → 0.8
    a = 1 / math.sqrt(2)
    policy = -(min(1.25 * a, 1.2 * a) + min(0.5 * -a, 0.8 * -a)) / 2
    assert stats["policy_loss"] == pytest.approx(policy, rel=1e-5)
    assert stats["value_loss"] == pytest.approx(0.5 * (1.0 + 0.0) / 2)
    assert float(loss) == pytest.approx(policy + 0.5 * 0.25 - 0.1 * 0.4, rel=1e-5)
    assert stats["clip_fraction"] == pytest.approx(1.0)


def test_training_raises_the_return_on_bandits(tmp_path):
    summary = train(small(60, "train.meta_batch_size=64", "train.meta_lr=0.003", "model.hidden=32",
                          "train.val_tasks=200"), tmp_path / "run", progress=False)
    val = [r for r in load(tmp_path / "run").metrics() if r["split"] == "val"]
    assert val[-1]["return"] > val[0]["return"] + 0.3 and val[-1]["return"] > 5.4   # random: 5.0
    assert summary["best_val_query_loss"] == pytest.approx(-max(r["return"] for r in val))


def test_resume_continues_to_the_same_parameters(tmp_path):
    train(small(30), tmp_path / "straight", progress=False)
    train(small(20), tmp_path / "resumed", progress=False)
    train(small(30), tmp_path / "resumed", resume=True, progress=False)
    a = load(tmp_path / "straight", "last").algorithm.state_dict()
    b = load(tmp_path / "resumed", "last").algorithm.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_recipes_that_mix_families_are_refused():
    with pytest.raises(UserError, match="environment family"):
        build_config(None, ["algorithm.name=rl2"])
    with pytest.raises(UserError, match="meta-reinforcement-learning algorithm"):
        build_config(None, ["task.family=bandits", "algorithm.name=maml"])
    with pytest.raises(UserError, match="needs model.name=gaussian-policy"):
        build_config(None, ["task.family=navigation-2d", "algorithm.name=maml-rl"])
    with pytest.raises(UserError, match="continuous actions"):
        from metadapt.build import build_algorithm
        build_algorithm(build_config(None, ["task.family=bandits", "algorithm.name=maml-rl",
                                            "model.name=gaussian-policy"]))


def test_eval_compares_the_agent_with_every_strategy_on_the_same_tasks(tmp_path, capsys):
    from metadapt.cli import main

    train(small(10), tmp_path / "run", progress=False)
    assert main(["eval", str(tmp_path / "run"), "--tasks", "50", "--no-progress"]) == 0
    out = capsys.readouterr().out
    for name in ("rl2", "random", "gittins", "thompson", "ucb1", "epsilon-greedy", "greedy", "oracle"):
        assert name in out
    results = json.loads((tmp_path / "run" / "eval" / "results.json").read_text())
    assert results["published"]["gittins"] == 6.6 and results["tasks"] == 50
    assert len(results["methods"]["rl2"]["curve"]) == 10                      # one point per pull
    run = load(tmp_path / "run")  # the best-arm share is that of the agent's own trial on those tasks
    env = run.family.sample(50, torch.Generator().manual_seed(run.config.eval.seed))
    actions = run.algorithm.play(env, torch.Generator().manual_seed(run.config.eval.seed + 1)).actions
    best = env.probs.argmax(-1, keepdim=True)
    expected = (actions[:, 0].flatten(1) == best).float().mean(0)
    assert torch.allclose(torch.tensor(results["methods"]["rl2"]["best_arm"]), expected)
    assert all(len(m["best_arm"]) == 10 for m in results["methods"].values())
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Total reward per trial" in report and "plots/trial_curves.png" in report
    assert "on the best arm, last 10% of pulls" in report
    g = results["methods"]["gittins"]  # the last tenth of 10 pulls is the last pull
    row = f"| gittins | {g['mean']:.2f} ± {g['ci95']:.2f} | {100 * g['best_arm'][-1]:.1f}% |"
    assert row in report
    assert (tmp_path / "run" / "plots" / "trial_curves.png").is_file()


def test_best_arm_share_counts_the_tasks_whose_pull_went_to_their_best_arm():
    from metadapt.envs.bandits import Bandits

    env = Bandits(horizon=3, probs=torch.tensor([[0.1, 0.9, 0.5], [0.8, 0.2, 0.3]]))
    actions = torch.tensor([[1, 0, 1], [0, 0, 2]])
    assert torch.equal(env.best_arm_share(actions), torch.tensor([1.0, 0.5, 0.5]))


@pytest.mark.parametrize("extra", [[], ["algorithm.anneal_lr=true"], ["model.critic=separate"],
                                   ["model.critic=task"], ["model.cell=lstm"],
                                   ["algorithm.weight_average=0.9"]],
                         ids=["constant-lr", "annealed-lr", "separate-critic", "task-critic", "lstm",
                              "weight-average"])
def test_sigkill_mid_run_then_resume_is_bit_identical(tmp_path, extra):
    import os
    import signal
    import subprocess
    import sys
    import time

    from pathlib import Path

    from metadapt.config import config_from_file

    recipe = str(Path(__file__).parent.parent / "configs/rl/rl2-bandits-n10-k5.yaml")
    settings = SMALL + ["train.iterations=40", "train.threads=1", *extra]
    train(config_from_file(recipe, settings), tmp_path / "reference", progress=False)
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "metadapt", "train", recipe, *settings, "--run-dir", str(run_dir),
           "--no-progress"]
    proc = subprocess.Popen(cmd, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120

    def logged():
        try:
            lines = (run_dir / "metrics.jsonl").read_text().splitlines()
            return max((json.loads(x)["step"] for x in lines if x.strip()), default=0)
        except (FileNotFoundError, ValueError):
            return 0

    while logged() < 15 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert logged() < 40, "the run finished before it could be killed"
    done = subprocess.run([sys.executable, "-m", "metadapt", "train", "--resume", "--run-dir", str(run_dir),
                           "--no-progress"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    a = torch.load(tmp_path / "reference/checkpoints/last.pt", weights_only=True)
    b = torch.load(run_dir / "checkpoints/last.pt", weights_only=True)
    assert a["step"] == b["step"] == 40 and all(torch.equal(a["state"][k], b["state"][k]) for k in a["state"])


def test_reward_scale_scales_the_learning_signal_not_the_reported_return():
    """With the value head at zero, the value targets are ``reward_scale`` × the discounted returns of
    the same trials (same policy, same draws), and the logged return stays in reward units."""
    env = TabularMDPFamily(TabularOptions(horizon=4, episodes=3)).sample(5, torch.Generator().manual_seed(3))
    out = {}
    for scale in (1.0, 0.1):
        agent = mdp_agent()
        agent.reward_scale = scale
        torch.nn.init.zeros_(agent.policy.value.weight)
        torch.nn.init.zeros_(agent.policy.value.bias)
        out[scale] = agent.experience(env, torch.Generator().manual_seed(4))
    assert out[1.0]["metrics"]["return"] == out[0.1]["metrics"]["return"]
    assert torch.allclose(out[0.1]["returns"], 0.1 * out[1.0]["returns"], atol=1e-5)
    assert out[1.0]["returns"].abs().max() > 1  # a real signal, not zeros


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_continuous_actions_carry_the_hidden_state_and_record_the_log_probabilities_they_train_on(cell):
    from metadapt.envs import PointRobotFamily
    from metadapt.envs.point_robot import PointRobotOptions
    from metadapt.models import RecurrentGaussianPolicy

    torch.manual_seed(0)
    agent = RL2(RecurrentGaussianPolicy(2, 2, hidden=16, cell=cell), episodes=2)
    family = PointRobotFamily(PointRobotOptions(horizon=4, episodes=2))
    env = family.sample(3, torch.Generator().manual_seed(1))
    traj = agent.play(env, torch.Generator().manual_seed(2), trials=2).trials()
    assert traj.actions.shape == (3, 2, 8, 2)
    means, values, _ = agent.policy(agent.sequence_inputs(traj))
    recomputed = agent.policy.distribution(means).log_prob(traj.actions.flatten(0, 1))
    assert torch.allclose(traj.extras["log_prob"].flatten(0, 1), recomputed, atol=1e-5)
    assert torch.allclose(traj.extras["value"].flatten(0, 1), values, atol=1e-5)
    inputs = agent.sequence_inputs(traj)
    assert torch.equal(inputs[:, 4, 2:4], traj.actions.flatten(0, 1)[:, 3])    # the previous action, as is
    reset, _, _ = agent.policy(inputs[:, 4:])
    assert not torch.allclose(reset[:, 0], means[:, 4], atol=1e-4)              # the state was carried


def test_the_policy_must_fit_the_family_s_actions():
    with pytest.raises(UserError, match="has continuous actions: use model.name=recurrent-gaussian-policy"):
        build_algorithm_for(["task.family=point-robot", "model.name=recurrent-policy", "algorithm.name=rl2"])
    with pytest.raises(UserError, match="has discrete actions: use model.name=recurrent-policy"):
        build_algorithm_for(["task.family=bandits", "model.name=recurrent-gaussian-policy",
                             "algorithm.name=rl2"])


def build_algorithm_for(overrides):
    from metadapt.build import build_algorithm

    return build_algorithm(build_config(None, overrides))


def test_anneal_lr_lowers_the_rate_linearly_to_zero_and_fixes_the_schedule_length(tmp_path):
    config = small(20, "algorithm.anneal_lr=true", "train.log_every=1", "train.meta_lr=0.002")
    train(config, tmp_path / "run", progress=False)
    rows = [r for r in load(tmp_path / "run").metrics() if r["split"] == "train"]
    assert [r["step"] for r in rows] == list(range(1, 21))
    assert [r["meta_lr"] for r in rows] == pytest.approx([0.002 * (1 - i / 20) for i in range(20)])
    with pytest.raises(UserError, match="train.iterations"):
        train(small(30, "algorithm.anneal_lr=true", "train.log_every=1", "train.meta_lr=0.002"),
              tmp_path / "run", resume=True, progress=False)
