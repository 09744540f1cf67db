"""Metrics read lazily: an update's scalars stay on its device until someone reads them.

Why: a learner's ``update()`` returns ``dict[str, float]`` (DESIGN: "Math returns metrics; loops log them"). Turning
each scalar into a Python float inside the update forces the host to wait for the device every update (a CUDA
sync, which also breaks CUDA-graph capture), although loops read the metrics only at their logging interval.
:class:`LazyMetrics` is a real ``dict[str, float]`` whose values come from ONE stacked tensor, copied to the host
with one ``.tolist()`` the first time any value is read; a loop that never reads them never syncs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from torch import Tensor


class LazyMetrics(dict[str, float]):
    """A ``dict[str, float]`` whose first values are materialised from a tensor on first read.

    Keys are known from the start (``len``, ``in``, ``bool`` never touch the tensor). Reading any value
    (``m[k]``, ``get``, ``items``, ``values``, iteration, ``dict(m)``, ``{**m}``, ``json.dumps``, ``repr``, ``==``,
    ``copy``, pickling) first copies the whole tensor to the host with one ``tolist()``; after that the object is an
    ordinary dict. Writes (``m[k] = v``, ``update``) never materialise: a written key simply replaces the pending
    value, so loops can merge their own metrics in every step without a sync.

    Args:
        names: ``K`` keys, in order.
        values: ``[K]`` tensor of their values (any device, any float dtype; detached by the caller).
    """

    __slots__ = ("_pending", "_values")

    def __init__(self, names: Sequence[str], values: Tensor):
        if values.ndim != 1 or values.shape[0] != len(names):
            raise ValueError(f"LazyMetrics: {len(names)} names but values of shape {tuple(values.shape)}")
        # Placeholder NaNs keep the C-level size right (json's empty-dict fast path reads it directly).
        super().__init__(dict.fromkeys(names, math.nan))
        self._pending: dict[str, int] | None = {name: i for i, name in enumerate(names)}
        self._values: Tensor | None = values

    # -- materialisation -------------------------------------------------------------------------------------
    @property
    def materialised(self) -> bool:
        """Whether the values have been copied to the host (True once any value was read)."""
        return self._pending is None

    def materialise(self) -> LazyMetrics:
        """Copy the pending values to the host now (one ``tolist()``); returns ``self``."""
        pending, values = self._pending, self._values
        if pending is not None and values is not None:
            self._pending, self._values = None, None
            host = values.tolist()
            for name, i in pending.items():
                dict.__setitem__(self, name, float(host[i]))
        return self

    def names(self) -> list[str]:
        """The keys, without reading any value (no materialisation)."""
        return list(dict.keys(self))

    def with_prefix(self, prefix: str) -> LazyMetrics:
        """The same metrics under ``prefix + key``, still pending if these are (they share the tensor)."""
        out = LazyMetrics.__new__(LazyMetrics)
        dict.__init__(out, {prefix + key: value for key, value in dict.items(self)})
        out._pending = None if self._pending is None else {prefix + key: i for key, i in self._pending.items()}
        out._values = self._values
        return out

    def _drop_pending(self, key: str) -> None:
        if self._pending is not None:
            self._pending.pop(key, None)

    # -- reads (materialise first) ---------------------------------------------------------------------------
    def __getitem__(self, key: str) -> float:
        self.materialise()
        return dict.__getitem__(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        self.materialise()
        return dict.get(self, key, default)

    def __iter__(self) -> Iterator[str]:
        # Overriding __iter__ also sends dict(m) / {**m} / f(**m) through keys() + __getitem__ (CPython's
        # dict_merge only copies a dict subclass's storage directly when its tp_iter is dict's own).
        self.materialise()
        return dict.__iter__(self)

    def __reversed__(self) -> Iterator[str]:
        self.materialise()
        return dict.__reversed__(self)

    def keys(self) -> Any:
        self.materialise()
        return dict.keys(self)

    def values(self) -> Any:
        self.materialise()
        return dict.values(self)

    def items(self) -> Any:
        self.materialise()
        return dict.items(self)

    def copy(self) -> dict[str, float]:  # type: ignore[override]
        """A plain ``dict`` copy (materialised)."""
        self.materialise()
        return dict(dict.items(self))

    def __copy__(self) -> dict[str, float]:
        return self.copy()

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, float]:
        return self.copy()

    def __reduce__(self) -> tuple[Any, ...]:
        return (dict, (self.copy(),))

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        return self.__reduce__()

    def __eq__(self, other: object) -> bool:
        self.materialise()
        if isinstance(other, LazyMetrics):
            other.materialise()
        return dict.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        self.materialise()
        return dict.__repr__(self)

    def __or__(self, other: Any) -> Any:
        self.materialise()
        return dict(dict.items(self)) | other

    def __ror__(self, other: Any) -> Any:
        self.materialise()
        return other | dict(dict.items(self))

    # -- writes (no materialisation) -------------------------------------------------------------------------
    def __setitem__(self, key: str, value: float) -> None:
        self._drop_pending(key)
        dict.__setitem__(self, key, value)

    def update(self, other: Any = (), /, **kwargs: float) -> None:  # type: ignore[override]
        items: Iterable[tuple[str, float]]
        if isinstance(other, Mapping):
            items = other.items()
        elif hasattr(other, "keys"):
            items = ((k, other[k]) for k in other.keys())  # noqa: SIM118 - the mapping protocol dict.update uses
        else:
            items = other
        for key, value in items:
            self[key] = value
        for key, value in kwargs.items():
            self[key] = value

    def __ior__(self, other: Any) -> LazyMetrics:  # type: ignore[override,misc]
        self.update(other)
        return self

    def setdefault(self, key: str, default: float = math.nan) -> float:  # type: ignore[override]
        self.materialise()
        return dict.setdefault(self, key, default)

    def __delitem__(self, key: str) -> None:
        self.materialise()
        dict.__delitem__(self, key)

    def pop(self, key: str, *default: Any) -> Any:
        self.materialise()
        return dict.pop(self, key, *default)

    def popitem(self) -> tuple[str, float]:
        self.materialise()
        return dict.popitem(self)

    def clear(self) -> None:
        self._pending, self._values = None, None
        dict.clear(self)


def metric_names(metrics: Mapping[str, float]) -> list[str]:
    """The keys of ``metrics`` without reading its values (a :class:`LazyMetrics` stays pending)."""
    return metrics.names() if isinstance(metrics, LazyMetrics) else list(metrics)


def prefixed(metrics: Mapping[str, float], prefix: str) -> dict[str, float]:
    """``{prefix + key: value}``; a :class:`LazyMetrics` stays pending (no host sync)."""
    if isinstance(metrics, LazyMetrics):
        return metrics.with_prefix(prefix)
    return {prefix + key: value for key, value in metrics.items()}
