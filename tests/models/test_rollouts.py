"""rollout(): exact masking, truncation, non-finite handling and batching, checked on a closed-form model."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from mbrl.models.ensemble import EnsembleConfig, ProbabilisticEnsemble
from mbrl.models.wrappers import KnownFunctionsModel
from mbrl.rollouts import rollout
from mbrl.types import TransitionBatch
from tests.models.dummy import DummyModel

# Constant action [0.5, 0.5]: with scale 1 every step adds exactly 1.0 to every obs dimension.
ACTION = torch.tensor([0.5, 0.5])


def policy(obs: Tensor) -> Tensor:
    return ACTION.expand(obs.shape[0], -1).clone()


def starts(xs: list[float]) -> Tensor:
    """Start states ``[x, 10 * i, 0]``: dim 1 identifies the rollout (it also moves +1 per step)."""
    return torch.tensor([[x, 10.0 * i, 0.0] for i, x in enumerate(xs)])


def rows_of(batch: TransitionBatch, rollout_id: int) -> TransitionBatch:
    """The rows of rollout ``rollout_id`` (dim 1 of obs lies in [10 i, 10 i + 9]) in time order."""
    rid = torch.div(batch.obs[:, 1], 10, rounding_mode="floor")
    sel = (rid == rollout_id).nonzero().squeeze(1)
    part = batch.index(sel)
    return part.index(torch.argsort(part.obs[:, 0]))


def test_lengths_terminations_and_truncations_are_exact() -> None:
    # terminated when next_obs[0] > 4.5. From x0 the rollout visits x0+1, x0+2, ...
    model = DummyModel(threshold=4.5)
    batch, stats = rollout(model, policy, starts([0.0, 1.0, 2.0, 3.0, 10.0]), horizon=4)
    expected = {0: (4, False), 1: (4, True), 2: (3, True), 3: (2, True), 4: (1, True)}  # id: (length, terminated)
    for rid, (length, terminates) in expected.items():
        part = rows_of(batch, rid)
        assert len(part) == length, rid
        x0 = [0.0, 1.0, 2.0, 3.0, 10.0][rid]
        assert part.obs[:, 0].tolist() == [x0 + k for k in range(length)]
        assert part.next_obs[:, 0].tolist() == [x0 + k + 1 for k in range(length)]
        assert part.reward.tolist() == [x0 + k for k in range(length)]  # reward = obs[0]
        assert part.action.tolist() == [[0.5, 0.5]] * length
        assert part.terminated.tolist() == [0.0] * (length - 1) + [1.0 if terminates else 0.0]
        assert part.truncated.tolist() == [0.0] * (length - 1) + [0.0 if terminates else 1.0]
    assert stats.n_start == 5
    assert stats.n_transitions == len(batch) == 14
    assert stats.n_terminated == 4
    assert stats.n_truncated == 1
    assert stats.n_nonfinite == 0
    assert stats.mean_length == pytest.approx(14 / 5)
    rewards = [0, 1, 2, 3, 1, 2, 3, 4, 2, 3, 4, 3, 4, 10]
    assert stats.mean_reward == pytest.approx(sum(rewards) / 14)
    assert stats.mean_uncertainty == pytest.approx(sum(rewards) / 14)  # uncertainty = |obs[0]|


def test_nonfinite_rows_are_dropped_counted_and_stop_their_rollout() -> None:
    # NaN next_obs predicted from any obs with x > 2.5: rollout 0 (x0=0) gets 3 valid steps then a NaN
    # (dropped); rollout 1 (x0=2) 1 valid step; rollout 2 (x0=5) none.
    model = DummyModel(nan_above=2.5)
    batch, stats = rollout(model, policy, starts([0.0, 2.0, 5.0]), horizon=6)
    assert bool(torch.isfinite(batch.next_obs).all()) and bool(torch.isfinite(batch.reward).all())
    assert len(rows_of(batch, 0)) == 3
    assert len(rows_of(batch, 1)) == 1
    assert len(rows_of(batch, 2)) == 0
    assert stats.n_nonfinite == 3
    assert stats.n_transitions == 4
    assert stats.n_truncated == 0  # no rollout reached the horizon
    assert batch.truncated.sum() == 0 and batch.terminated.sum() == 0


def test_infinite_reward_rows_are_dropped() -> None:
    def reward_fn(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
        return torch.where(obs[:, 0] >= 2, torch.full_like(obs[:, 0], math.inf), obs[:, 0])

    model = KnownFunctionsModel(DummyModel(), reward_fn=reward_fn)
    batch, stats = rollout(model, policy, starts([0.0]), horizon=5)
    assert len(batch) == 2 and stats.n_nonfinite == 1
    assert batch.reward.tolist() == [0.0, 1.0]


def test_term_fn_overrides_model_and_sees_clipped_next_obs() -> None:
    model = DummyModel(threshold=-math.inf)  # the model says "terminated" on every step
    never = lambda o, a, n: torch.zeros(n.shape[0])  # noqa: E731
    batch, stats = rollout(model, policy, starts([0.0, 1.0]), horizon=3, term_fn=never)
    assert stats.n_transitions == 6 and stats.n_terminated == 0 and stats.n_truncated == 2

    # Clip obs into [-inf, 2.0]: x never exceeds 2, so a term_fn at x > 2.5 never fires.
    low, high = torch.full((3,), -math.inf), torch.tensor([2.0, math.inf, math.inf])
    above = lambda o, a, n: (n[:, 0] > 2.5).float()  # noqa: E731
    batch, stats = rollout(DummyModel(), policy, starts([0.0]), horizon=5, term_fn=above, clip_obs=(low, high))
    assert batch.next_obs[:, 0].tolist() == [1.0, 2.0, 2.0, 2.0, 2.0]
    assert stats.n_terminated == 0 and stats.n_transitions == 5
    # Without the clip the same term_fn stops the rollout at x = 3.
    batch, stats = rollout(DummyModel(), policy, starts([0.0]), horizon=5, term_fn=above)
    assert batch.next_obs[:, 0].tolist() == [1.0, 2.0, 3.0] and stats.n_terminated == 1


def test_inf_is_dropped_not_clipped() -> None:
    def reward_fn(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
        return obs[:, 0]

    class InfModel(DummyModel):
        def predict(self, obs, action, *, deterministic=False, generator=None):  # type: ignore[no-untyped-def]
            step = super().predict(obs, action, deterministic=deterministic, generator=generator)
            nxt = torch.where(obs[:, :1] >= 1, torch.full_like(step.next_obs, math.inf), step.next_obs)
            return type(step)(nxt, step.reward, step.terminated, step.info)

    clip = (torch.full((3,), -100.0), torch.full((3,), 100.0))
    batch, stats = rollout(InfModel(), policy, starts([0.0]), horizon=5, clip_obs=clip)
    assert len(batch) == 1 and stats.n_nonfinite == 1


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 1000])
def test_chunking_gives_the_same_transitions(chunk_size: int) -> None:
    model = DummyModel(threshold=4.5)
    xs = [0.0, 1.0, 2.0, 3.0, 10.0]
    ref, _ = rollout(model, policy, starts(xs), horizon=4, chunk_size=1000)
    got, stats = rollout(model, policy, starts(xs), horizon=4, chunk_size=chunk_size)
    assert stats.n_transitions == 14

    def key(b: TransitionBatch) -> list[list[float]]:
        return sorted(torch.cat([b.obs, b.next_obs, b.terminated[:, None], b.truncated[:, None]], 1).tolist())

    assert key(got) == key(ref)


def test_one_model_call_per_step_per_chunk_and_policy_sees_live_rows_only() -> None:
    model = DummyModel(threshold=4.5)
    seen: list[int] = []

    def counting_policy(obs: Tensor) -> Tensor:
        seen.append(obs.shape[0])
        return policy(obs)

    rollout(model, counting_policy, starts([0.0, 1.0, 2.0, 3.0, 10.0]), horizon=4)
    assert model.n_predict_calls == 4
    assert seen == [5, 4, 3, 2]  # live rollouts per step
    model.n_predict_calls = 0
    rollout(model, policy, starts([0.0, 1.0, 2.0, 3.0, 10.0]), horizon=4, chunk_size=2)
    # chunks {0, 1}: 4 steps; {2, 3}: both terminated after 3 steps; {10}: after 1 step
    assert model.n_predict_calls == 4 + 3 + 1


def test_generator_controls_sampling() -> None:
    model = DummyModel(noise_std=0.1)
    s = starts([0.0, 1.0, 2.0])

    def run(seed: int) -> TransitionBatch:
        return rollout(model, policy, s, horizon=3, generator=torch.Generator().manual_seed(seed))[0]

    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a.next_obs, b.next_obs)
    assert not torch.allclose(a.next_obs, c.next_obs)
    det, _ = rollout(model, policy, s, horizon=3, deterministic=True)
    assert det.next_obs[:, 0].tolist() == [1.0, 2.0, 3.0, 2.0, 3.0, 4.0, 3.0, 4.0, 5.0]


def test_ensemble_rollout_shapes_and_uncertainty() -> None:
    model = ProbabilisticEnsemble(3, 2, EnsembleConfig(num_members=3, num_elites=2, hidden=16, depth=2, device="cpu"))
    batch, stats = rollout(model, policy, torch.randn(50, 3), horizon=3, generator=torch.Generator().manual_seed(0))
    assert len(batch) == 150 and batch.obs.shape == (150, 3) and batch.action.shape == (150, 2)
    assert stats.n_truncated == 50
    assert stats.mean_uncertainty is not None and stats.mean_uncertainty > 0
    # consecutive steps chain: next_obs of step t is obs of step t+1 (step-major order within a chunk)
    assert torch.equal(batch.next_obs[:50], batch.obs[50:100])


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="horizon"):
        rollout(DummyModel(), policy, starts([0.0]), horizon=0)
    with pytest.raises(ValueError, match="start_obs"):
        rollout(DummyModel(), policy, torch.zeros(3), horizon=1)
    batch, stats = rollout(DummyModel(nan_above=-1.0), policy, starts([0.0]), horizon=2)
    assert len(batch) == 0 and batch.action.shape == (0, 2) and stats.n_nonfinite == 1
    assert math.isnan(stats.mean_reward)
