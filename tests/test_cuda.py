"""The CUDA checks of issue 24, run on a GPU machine and skipped elsewhere.

- the SAC-N update gives the same metrics and weights on CUDA as on CPU (same init, same draws);
- a learner checkpoint saved on CUDA loads on CPU (and back);
- replay buffers store and sample on the GPU, the same rows as on the host;
- the compiled update (``reduce-overhead``: CUDA graphs) equals the eager one;
- an update does not sync with the host (``torch.cuda.set_sync_debug_mode("error")``).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import torch

from mbrl.data import ReplayBuffer
from mbrl.models.ensemble import EnsembleConfig, ProbabilisticEnsemble
from mbrl.rl.sac import SAC, SACConfig
from mbrl.types import TransitionBatch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (torch.cuda.is_available() is False)")

OBS, ACT = 11, 3
RAVL: dict[str, Any] = dict(hidden=64, depth=3, num_critics=10, edac_eta=1.0, update_order="alpha_actor_critic", init="edac")


def batches(n: int = 5, rows: int = 256) -> list[TransitionBatch]:
    g = torch.Generator().manual_seed(1)
    return [
        TransitionBatch(
            torch.randn(rows, OBS, generator=g), torch.rand(rows, ACT, generator=g) * 2 - 1,
            torch.randn(rows, generator=g), torch.randn(rows, OBS, generator=g),
            (torch.rand(rows, generator=g) < 0.05).float(), torch.zeros(rows),
        )
        for _ in range(n)
    ]


def learner(device: str, **kw: Any) -> SAC:
    config = SACConfig(device=device, **{**RAVL, **kw})
    return SAC(OBS, ACT, -np.ones(ACT), np.ones(ACT), config, generator=torch.Generator().manual_seed(0))


@pytest.fixture(autouse=True)
def exact_matmuls() -> Any:
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = old


def test_sac_update_metrics_match_between_cpu_and_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu, gpu = learner("cpu"), learner("cuda")
    assert gpu.device.type == "cuda" and gpu.device_generator is not None
    for a, b in zip(cpu.parameters(), gpu.parameters()):  # same init (drawn on the host, then moved)
        torch.testing.assert_close(b.cpu(), a)
    # Same draws on both: the host learner's noise, copied to the GPU learner.
    draws: list[tuple[torch.Tensor, torch.Tensor]] = []
    cpu_draw = cpu._draw_noise

    def record(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        noise, next_noise = cpu_draw(n)
        draws.append((noise.clone(), next_noise.clone()))
        return noise, next_noise

    monkeypatch.setattr(cpu, "_draw_noise", record)
    monkeypatch.setattr(gpu, "_draw_noise", lambda n: tuple(t.cuda() for t in draws[-1]))
    for b in batches():
        mc = cpu.update(b)
        mg = gpu.update(b.to("cuda"))
        for k in mc:
            assert mg[k] == pytest.approx(mc[k], rel=1e-3, abs=1e-4), k
    for a, b in zip(cpu.parameters(), gpu.parameters()):
        torch.testing.assert_close(b.cpu(), a, rtol=1e-3, atol=1e-4)


def test_checkpoint_saved_on_cuda_loads_on_cpu_and_back() -> None:
    gpu = learner("cuda")
    for b in batches(3):
        gpu.update(b.to("cuda"))
    buffer = io.BytesIO()
    torch.save(gpu.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True, map_location="cpu")
    cpu = learner("cpu")
    cpu.load_state_dict(state)
    obs = torch.randn(7, OBS)
    torch.testing.assert_close(cpu.act(obs, deterministic=True), gpu.act(obs.cuda(), deterministic=True).cpu())
    again = learner("cuda")
    again.load_state_dict(cpu.state_dict())
    again.update(batches(1)[0].to("cuda"))  # the optimizer state moved along
    assert again.num_updates == 4


def test_replay_buffer_samples_on_the_gpu_the_rows_the_host_samples() -> None:
    host = ReplayBuffer(100, OBS, ACT, rng=np.random.default_rng(0))
    dev = ReplayBuffer(100, OBS, ACT, rng=np.random.default_rng(0), device="cuda")
    for b in batches(1, rows=150):
        host.add_batch(b)
        dev.add_batch(b.to("cuda"))
    s_host, s_dev = host.sample(64), dev.sample(64)
    assert s_dev.obs.device.type == "cuda" and isinstance(dev.obs, torch.Tensor) and dev.obs.is_cuda
    for a, b in zip(s_host.as_numpy().values(), s_dev.as_numpy().values()):
        np.testing.assert_array_equal(a, b)
    moved = ReplayBuffer(100, OBS, ACT, rng=np.random.default_rng(5))
    moved.load_state_dict(dev.state_dict())  # device storage -> host storage
    assert len(moved) == 100


def test_compiled_cuda_graph_update_matches_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    eager, fast = learner("cuda"), learner("cuda", compile="reduce-overhead")
    fast.load_state_dict(eager.state_dict())
    data = [b.to("cuda") for b in batches(6)]
    for b in data:
        me, mf = eager.update(b), fast.update(b)
        for k in me:
            assert mf[k] == pytest.approx(me[k], rel=1e-3, abs=1e-4), k


def test_update_and_ensemble_step_do_not_sync_with_the_host() -> None:
    gpu = learner("cuda")
    model = ProbabilisticEnsemble(OBS, ACT, EnsembleConfig(device="cuda", hidden=64, depth=2))
    data = [b.to("cuda") for b in batches(3)]
    members = [torch.randn(7, 256, d, device="cuda") for d in (OBS, ACT)]
    reward, next_obs = torch.randn(7, 256, device="cuda"), torch.randn(7, 256, OBS, device="cuda")
    gpu.update(data[0])
    model.update_members(members[0], members[1], reward, next_obs)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        metrics = [gpu.update(b) for b in data[1:]]
        model.update_members(members[0], members[1], reward, next_obs)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(np.isfinite(v) for m in metrics for v in m.values())
