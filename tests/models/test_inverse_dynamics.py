"""InverseDynamicsModel: windows, exact recovery on a linear system, ensembles, step-based training, the paper
preset, save/load, capability, determinism."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from mbrl.data import OfflineDataset
from mbrl.models.inverse_dynamics import (
    IDMConfig,
    InverseDynamicsModel,
    action_errors,
    episode_windows,
    idm_preset,
    pair_windows,
    squashed_gaussian_nll,
)
from mbrl.models.protocol import InverseDynamics

OBS_DIM, ACT_DIM = 4, 2


def linear_system(n_episodes: int, length: int, seed: int) -> OfflineDataset:
    """``s' = A s + B a`` with ``B`` of full column rank, ``a ~ U(-0.9, 0.9)`` (the box is [-1, 1])."""
    rng = np.random.default_rng(seed)
    a_mat = np.array([[0.9, 0.1, 0, 0], [0, 0.9, 0.1, 0], [0, 0, 0.9, 0.1], [0.1, 0, 0, 0.9]], np.float32)
    b_mat = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, -0.5], [0.3, 0.7]], np.float32)
    obs, nxt, act = [], [], []
    for _ in range(n_episodes):
        s = rng.normal(size=OBS_DIM).astype(np.float32)
        for _ in range(length):
            a = rng.uniform(-0.9, 0.9, size=ACT_DIM).astype(np.float32)
            s2 = a_mat @ s + b_mat @ a
            obs.append(s)
            act.append(a)
            nxt.append(s2)
            s = s2
    n = len(obs)
    timeouts = np.zeros(n, bool)
    timeouts[length - 1 :: length] = True
    return OfflineDataset(np.stack(obs), np.stack(act), np.zeros(n, np.float32), np.stack(nxt),
                          np.zeros(n, bool), timeouts)


def _model(config: IDMConfig, seed: int = 0) -> InverseDynamicsModel:
    return InverseDynamicsModel(OBS_DIM, ACT_DIM, -np.ones(ACT_DIM), np.ones(ACT_DIM), config,
                                generator=torch.Generator().manual_seed(seed))


def _epochs(epochs: int, **fields: object) -> IDMConfig:
    """A small epoch-based config (validation every epoch)."""
    base = {"hidden": 64, "dropout": 0.0, "lr": 3e-3, "batch_size": 64, "max_steps": None, "max_epochs": epochs,
            "val_every": None}
    return IDMConfig(**{**base, **fields})  # type: ignore[arg-type]


def test_episode_windows_repeat_edges_within_episodes() -> None:
    ds = linear_system(3, 4, 0)
    w = episode_windows(ds, 1)
    assert w.shape == (12, 3, OBS_DIM)
    np.testing.assert_array_equal(w[:, 1], ds.observations)  # centre = s_t
    np.testing.assert_array_equal(w[:, 2], ds.next_observations)  # last = s_{t+1}
    np.testing.assert_array_equal(w[0, 0], ds.observations[0])  # episode start: s_0 repeated
    np.testing.assert_array_equal(w[4, 0], ds.observations[4])  # second episode: not the first's state
    np.testing.assert_array_equal(w[5, 0], ds.observations[4])  # s_{t-1}
    # k = 2 past states, f = 1 future state (the reference code's layout): s_{t-2}, s_{t-1}, s_t, s_{t+1}
    w2 = episode_windows(ds, 2)
    assert w2.shape == (12, 4, OBS_DIM)
    np.testing.assert_array_equal(w2[3, 0], ds.observations[1])
    np.testing.assert_array_equal(w2[3, 3], ds.next_observations[3])
    np.testing.assert_array_equal(w2[1, 0], ds.observations[0])  # before the start: s_0 repeated
    # f = 2 future states: past the end the final state s_T is repeated
    wf = episode_windows(ds, 1, 2)
    assert wf.shape == (12, 4, OBS_DIM)
    np.testing.assert_array_equal(wf[2, 3], ds.next_observations[3])  # s_{t+2} = s_4 = last next obs
    np.testing.assert_array_equal(wf[3, 3], ds.next_observations[3])
    np.testing.assert_array_equal(wf[1, 3], ds.observations[3])
    starts = [0, 4, 8]
    pw = pair_windows(torch.as_tensor(ds.observations[starts]), torch.as_tensor(ds.next_observations[starts]), 1)
    np.testing.assert_array_equal(pw.numpy(), w[starts])  # at an episode start the two rules agree
    mid = pair_windows(torch.as_tensor(ds.observations[[1]]), torch.as_tensor(ds.next_observations[[1]]), 1)
    np.testing.assert_array_equal(mid.numpy()[0, 0], ds.observations[1])  # no past: s_t repeated
    assert not np.array_equal(mid.numpy()[0, 0], w[1, 0])  # episode windows see s_{t-1}


def test_windows_and_targets_never_cross_an_episode_end_without_a_true_next_state() -> None:
    """A D4RL file without next_observations: a terminal row's derived next state is the next episode's reset.
    The window of that row must not hold it, and the row is not an IDM target."""
    ds = linear_system(2, 4, 0)
    terminals = np.zeros(8, bool)
    terminals[3] = True
    nxt = ds.next_observations.copy()
    nxt[3] = ds.observations[4]  # what deriving next_observations from the file gives
    known = np.ones(8, bool)
    known[3] = False
    derived = OfflineDataset(ds.observations, ds.actions, ds.rewards, nxt, terminals, np.zeros(8, bool),
                             next_obs_known=known)
    w = episode_windows(derived, 1, 2)
    second_episode = derived.observations[4:]
    for row in range(4):  # no state of the second episode appears in any window of the first
        assert not any(np.array_equal(state, s2) for state in w[row] for s2 in second_episode), row
    np.testing.assert_array_equal(w[3, 2], derived.observations[3])  # edge state s_{T-1} repeated
    np.testing.assert_array_equal(w[2, 3], derived.observations[3])
    # Training and evaluation see only rows with a true next state: 7 of 8.
    idm = _model(_epochs(1, holdout_fraction=0.5))
    seen: list[int] = []
    original = idm.member_nll

    def counting(windows, actions):  # type: ignore[no-untyped-def]
        seen.append(windows.shape[0])
        return original(windows, actions)

    idm.member_nll = counting  # type: ignore[method-assign]
    idm.evaluate(derived)
    assert seen == [7]


def test_recovers_linear_system_actions_almost_exactly() -> None:
    train = linear_system(40, 50, 0)
    test = linear_system(5, 50, 1)
    idm = _model(_epochs(40))
    before = action_errors(idm.label(test), test.actions)  # type: ignore[arg-type]
    metrics = idm.fit(train, np.random.default_rng(0))
    after = action_errors(idm.label(test), test.actions)  # type: ignore[arg-type]
    assert before["r2"] < 0.5
    assert after["r2_0"] > 0.99 and after["r2_1"] > 0.99, after
    assert after["mse"] < 3e-3, after
    assert metrics["val_r2"] > 0.99 and 1 <= metrics["best_step"] <= metrics["steps"]
    assert metrics["epochs"] == 40 and metrics["steps"] == 40 * int(np.ceil(0.9 * len(train) / 64))
    # the capability: pairs alone suffice for a Markov system
    assert isinstance(idm, InverseDynamics)
    pred = idm.predict_action(torch.as_tensor(test.observations), torch.as_tensor(test.next_observations))
    assert action_errors(pred.numpy(), test.actions)["r2"] > 0.98  # type: ignore[arg-type]


def test_ensemble_labels_are_the_members_mean_and_at_least_as_good_as_one_member() -> None:
    train = linear_system(20, 50, 0)
    test = linear_system(5, 50, 1)
    single = _model(_epochs(20))
    single.fit(train, np.random.default_rng(0))
    ens = _model(_epochs(20, num_members=5))
    ens.fit(train, np.random.default_rng(0))
    err_single = action_errors(single.label(test), test.actions)  # type: ignore[arg-type]
    err_ens = action_errors(ens.label(test), test.actions)  # type: ignore[arg-type]
    assert err_ens["r2"] > 0.97 and err_ens["mse"] <= err_single["mse"], (err_ens, err_single)
    # the label is the mean over members of tanh(mu) (box [-1, 1]: no rescaling), and the members differ
    windows = torch.as_tensor(episode_windows(test, 1))
    ens.net.eval()
    with torch.no_grad():
        mean, _ = ens._dist(windows)
    assert mean.shape == (5, len(test), ACT_DIM)
    members = torch.tanh(mean).numpy()
    np.testing.assert_allclose(ens.label(test), members.mean(0), atol=1e-6)
    assert np.abs(members[0] - members[1]).max() > 1e-3


def test_member_losses_do_not_share_gradients() -> None:
    """Member 0's loss moves only member 0's stacked rows (nets 0 and 2: its mean and log-std nets)."""
    idm = _model(_epochs(1, num_members=2))
    ds = linear_system(2, 10, 0)
    mean, log_std = idm._dist(torch.as_tensor(episode_windows(ds, 1)))
    squashed_gaussian_nll(mean[0], log_std[0], torch.as_tensor(ds.actions)).mean().backward()
    for name, p in idm.net.named_parameters():
        assert p.grad is not None
        assert p.grad[[1, 3]].abs().max() == 0, name
        assert p.grad[[0, 2]].abs().max() > 0, name


def test_step_budget_and_validation_cadence() -> None:
    ds = linear_system(10, 20, 0)
    idm = _model(dataclasses.replace(_epochs(1), max_steps=7, max_epochs=None, val_every=3, batch_size=16))
    metrics = idm.fit(ds, np.random.default_rng(0))
    # 180 training rows / 16 = 12 steps per epoch: the step limit ends training inside the first epoch
    assert metrics["steps"] == 7 and metrics["epochs"] == 1
    assert metrics["best_step"] in (1, 3, 6, 7)  # validated after step 1, every 3 steps, and at the end
    with pytest.raises(ValueError, match="max_steps or max_epochs"):
        IDMConfig(max_steps=None, max_epochs=None)


def test_paper_preset_matches_the_reference_code() -> None:
    """Values of facebookresearch/ssorl config/config.yaml and model/mlp.py (see idm_preset's docstring)."""
    paper = idm_preset("paper")
    assert paper == IDMConfig()
    assert (paper.context, paper.future, paper.hidden, paper.depth, paper.dropout) == (1, 1, 1024, 2, 0.1)
    assert (paper.lr, paper.weight_decay, paper.batch_size, paper.max_steps, paper.val_every) == (1e-4, 0.0, 1024, 100, 10)
    assert (paper.holdout_fraction, paper.num_members, paper.min_log_std, paper.max_log_std) == (0.1, 1, -5.0, 2.0)
    assert paper.separate_std_net and paper.patience == 0
    # the architecture it builds: two 2 x 1024 ReLU nets (mean, log std) over 3 states, orthogonal init
    idm = _model(paper)
    layers = idm.net.layers
    assert [tuple(layer.weight.shape) for layer in layers] == [(2, 3 * OBS_DIM, 1024), (2, 1024, 1024), (2, 1024, ACT_DIM)]
    w = layers[1].weight[0]
    torch.testing.assert_close(w.T @ w, torch.eye(1024), atol=1e-4, rtol=0)
    assert layers[0].bias.abs().max() == 0


def test_log_std_stays_in_bounds() -> None:
    idm = _model(_epochs(1, min_log_std=-5.0, max_log_std=2.0))
    with torch.no_grad():
        _, log_std = idm._dist(1e3 * torch.randn(64, 3, OBS_DIM))
    assert log_std.min() >= -5.0 and log_std.max() <= 2.0 and log_std.max() - log_std.min() > 1.0


def test_save_load_same_labels_and_seed_determinism(tmp_path: Path) -> None:
    ds = linear_system(6, 20, 0)
    cfg = _epochs(2, hidden=32, dropout=0.1, num_members=2)
    a = _model(cfg, 1)
    metrics = a.fit(ds, np.random.default_rng(0))
    a.save(tmp_path, metrics)
    b, stored = InverseDynamicsModel.load_with_metrics(tmp_path)
    assert stored == metrics and b.config == cfg
    np.testing.assert_array_equal(a.label(ds), b.label(ds))
    c = _model(cfg, 1)
    c.fit(ds, np.random.default_rng(0))  # dropout and bootstrap included: same seed, same weights
    np.testing.assert_array_equal(a.label(ds), c.label(ds))
    d = _model(cfg, 2)
    d.fit(ds, np.random.default_rng(0))
    assert not np.array_equal(a.label(ds), d.label(ds))
    labels = a.label(ds)
    assert labels.shape == (len(ds), ACT_DIM) and np.all(np.abs(labels) < 1.0)  # inside the action box
    with pytest.raises(FileNotFoundError, match="not an IDM run directory"):
        InverseDynamicsModel.load(tmp_path / "nothing")


def test_min_steps_delays_early_stopping() -> None:
    ds = linear_system(10, 20, 0)  # 180 training rows / 16 = 12 steps per epoch
    impatient = _epochs(50, patience=1, lr=100.0, batch_size=16)  # a step size that makes validation worsen
    assert _model(impatient).fit(ds, np.random.default_rng(0))["steps"] < 100
    metrics = _model(dataclasses.replace(impatient, min_steps=100)).fit(ds, np.random.default_rng(0))
    assert metrics["steps"] >= 100 and metrics["epochs"] < 50
    with pytest.raises(ValueError, match="min_steps"):
        IDMConfig(min_steps=-1).validate()


def test_a_fit_killed_midway_continues_from_its_progress_file(tmp_path: Path) -> None:
    """3 bootstrapped members with dropout, 6 epochs, progress saved every epoch; the fit is stopped by an
    exception in its 4th epoch; a fresh model of the same seed continues from the end of epoch 3 and ends bit for
    bit where an uninterrupted fit ends (weights, best weights, metrics)."""
    data = linear_system(12, 40, 0)
    config = _epochs(6, num_members=3, dropout=0.1)
    reference = _model(config)
    ref_metrics = reference.fit(data, np.random.default_rng(5))
    steps_per_epoch = int(ref_metrics["steps"]) // 6
    path = tmp_path / "idm_fit_progress.pt"

    killed = _model(config)
    calls = {"n": 0}
    update = killed.update

    def dies_in_epoch_4(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 3 * steps_per_epoch + 2:
            raise KeyboardInterrupt
        return update(*args, **kwargs)  # type: ignore[arg-type]

    killed.update = dies_in_epoch_4  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        killed.fit(data, np.random.default_rng(5), checkpoint=path, checkpoint_every_s=0)
    assert path.is_file()

    resumed = _model(config)
    done = {"n": 0}
    update2 = resumed.update

    def counted(*args: object, **kwargs: object) -> object:
        done["n"] += 1
        return update2(*args, **kwargs)  # type: ignore[arg-type]

    resumed.update = counted  # type: ignore[method-assign]
    metrics = resumed.fit(data, np.random.default_rng(5), checkpoint=path)
    assert done["n"] == 3 * steps_per_epoch  # epochs 4-6 only
    for key, value in reference.net.state_dict().items():
        assert torch.equal(value, resumed.net.state_dict()[key]), key
    assert {k: v for k, v in metrics.items() if k != "time_s"} == {
        k: v for k, v in ref_metrics.items() if k != "time_s"
    }
    with pytest.raises(ValueError, match="another IDM fit"):
        _model(_epochs(7, num_members=3, dropout=0.1)).fit(data, np.random.default_rng(5), checkpoint=path)
