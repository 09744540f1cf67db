"""``SACConfig.compile``: the compiled update is the eager one (same numbers within float tolerance).

torch.compile's inductor needs a C++ compiler on CPU; the test is skipped with the reason when none is found.
Compiling takes ~40 s on one busy core, so it is marked slow.
"""

from __future__ import annotations

import shutil
from typing import Any

import pytest
import torch

from mbrl.rl.sac import SAC, SACConfig
from mbrl.types import TransitionBatch

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("g++") is None and shutil.which("gcc") is None, reason="inductor needs a C++ compiler"),
]


def batches(n: int = 4) -> list[TransitionBatch]:
    g = torch.Generator().manual_seed(1)
    return [
        TransitionBatch(
            torch.randn(32, 5, generator=g), torch.rand(32, 2, generator=g) * 2 - 1, torch.randn(32, generator=g),
            torch.randn(32, 5, generator=g), (torch.rand(32, generator=g) < 0.1).float(), torch.zeros(32),
        )
        for _ in range(n)
    ]


@pytest.mark.parametrize(
    "kw",
    [{}, {"num_critics": 10, "edac_eta": 1.0, "update_order": "alpha_actor_critic", "init": "edac"}],
    ids=["sac", "ravl_sac_n_edac"],
)
def test_compiled_update_matches_eager(kw: dict[str, Any]) -> None:
    def make(mode: str) -> SAC:
        config = SACConfig(hidden=16, compile=mode, **kw)  # type: ignore[arg-type]
        return SAC(5, 2, [-1, -1], [1, 1], config, generator=torch.Generator().manual_seed(0))

    eager, compiled = make("none"), make("default")
    for b in batches():
        me, mc = eager.update(b), compiled.update(b)
        assert set(me) == set(mc)
        for k in me:
            assert mc[k] == pytest.approx(me[k], rel=1e-4, abs=1e-5), k
    for pe, pc in zip(eager.parameters(), compiled.parameters()):
        torch.testing.assert_close(pc, pe, rtol=1e-4, atol=1e-5)
    assert compiled.num_updates == eager.num_updates == 4
