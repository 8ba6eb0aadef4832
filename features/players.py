"""The players of an explanation and the hybrid patients their coalitions describe.

Shapley values need a value function over coalitions S of players. The project's is
*interventional at the input level*:

    v(S) = (1 / K) * sum over background patients b of f(features(x_S, b_rest)),

where the hybrid record takes the patient's own values on the inputs in S and the background
patient's elsewhere, and is pushed through the feature definitions
(:func:`features.pipeline.feature_matrix`). The players are the 16 inputs of the data
contract, so the one-hot technique is one player and a feature computed from several inputs
(EQD2 from a dose and a dose per fraction; cumulative EQD2 from four inputs) is exact: it
takes the value the pipeline gives the hybrid record.

The kernels in :mod:`models.shapley` never see inputs. They get, per background patient q and
model feature j, the hybrid value of j under every assignment of j's parent players,
``table[q, j, m]`` (bit i of m set: parent i takes the patient's value), plus the parents
themselves. A feature with p parents needs 2^p entries; the contract's largest is 4.

:class:`PlayerMap` also serves a plain numeric matrix (each feature its own player,
:func:`feature_players`), so the same kernels explain a model fitted on any features.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.pipeline import FEATURE_COLUMNS, FEATURE_INPUTS, feature_matrix
from features.schema import INPUT_COLUMNS

PLAYERS: tuple[str, ...] = tuple(c for c in INPUT_COLUMNS if c != "patient_id")
"""The 16 inputs of the contract: the players of every explanation the product shows."""
MAX_PARENTS = 4
"""Most inputs one feature depends on (cumulative EQD2); tables have 2^MAX_PARENTS slots."""
MAX_PLAYERS = 62
"""Coalitions are int64 bit masks in the kernels."""
DEFAULT_BACKGROUND_SIZE = 100
"""K: background patients of the value function, drawn from the training data and stored in
the model bundle. The value function is exact for any K; K sets the cost (linear) and how
closely the base value approaches the training average (its sampling error)."""

FeatureFn = Callable[[Mapping[str, np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class PlayerMap:
    """Players, the features computed from them, and how to build hybrid feature values.

    ``parents[j, i]`` is the i-th player feature j depends on (-1 pads), ``n_parents[j]``
    their number. ``feature_fn`` maps player columns (name -> array) to the (n, F) feature
    matrix; ``feature_names`` are its columns in order.
    """

    players: tuple[str, ...]
    feature_names: tuple[str, ...]
    parents: np.ndarray  # (F, MAX_PARENTS) int64
    n_parents: np.ndarray  # (F,) int64
    feature_fn: FeatureFn
    _combo_masks: np.ndarray = field(repr=False)  # (C, P) bool: player from the patient
    _slot_combo: np.ndarray = field(repr=False)  # (F, 2^MAX_PARENTS) combo of each slot

    @property
    def n_players(self) -> int:
        return len(self.players)

    @property
    def n_slots(self) -> int:
        return 1 << int(self.n_parents.max(initial=1))

    def columns(self, rows) -> dict[str, np.ndarray]:
        """Player columns (name -> 1-d array) of a DataFrame, a mapping or a list of objects."""
        if isinstance(rows, pd.DataFrame):
            missing = [p for p in self.players if p not in rows.columns]
            if missing:
                raise ValueError(f"the explanation needs the input column(s) {missing}")
            return {p: _column(rows[p].to_numpy()) for p in self.players}
        if isinstance(rows, Mapping):
            return {p: _column(np.atleast_1d(np.asarray(rows[p]))) for p in self.players}
        return {p: _column(np.array([getattr(r, p) for r in rows])) for p in self.players}

    def features(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        """The (n, F) feature matrix of player columns."""
        return np.asarray(self.feature_fn(columns), dtype=np.float64)

    def hybrid_table(
        self, x: Mapping[str, np.ndarray], background: Mapping[str, np.ndarray], row: int = 0
    ) -> np.ndarray:
        """(K, F, n_slots) hybrid feature values of patient ``x[row]`` against K backgrounds.

        One call of the feature function on (distinct assignments x K) hybrid records.
        """
        k = len(background[self.players[0]])
        masks = self._combo_masks
        cols = {}
        for i, p in enumerate(self.players):
            b = np.asarray(background[p])
            xv = np.asarray(x[p])[row]
            cols[p] = np.where(masks[:, i][:, None], xv, b[None, :]).reshape(-1)
        feats = self.features(cols).reshape(masks.shape[0], k, -1)
        f_idx = np.arange(feats.shape[2])[:, None]
        table = feats[self._slot_combo[:, : self.n_slots], :, f_idx]  # (F, slots, K)
        return np.ascontiguousarray(np.transpose(table, (2, 0, 1)))


def _column(values: np.ndarray) -> np.ndarray:
    """Numbers as float (None -> NaN), everything else as it is."""
    if values.dtype == object:
        try:
            return values.astype(float)
        except (TypeError, ValueError):
            return values.astype(str)
    return values


def make_player_map(
    players: Sequence[str],
    feature_names: Sequence[str],
    feature_parents: Mapping[str, Sequence[str]],
    feature_fn: FeatureFn,
) -> PlayerMap:
    """A :class:`PlayerMap` from each feature's parent players (names)."""
    players = tuple(players)
    if len(players) > MAX_PLAYERS:
        raise ValueError(f"at most {MAX_PLAYERS} players")
    index = {p: i for i, p in enumerate(players)}
    n_feat = len(feature_names)
    parents = np.full((n_feat, MAX_PARENTS), -1, dtype=np.int64)
    n_parents = np.zeros(n_feat, dtype=np.int64)
    for j, name in enumerate(feature_names):
        ps = tuple(feature_parents[name])
        if not 1 <= len(ps) <= MAX_PARENTS:
            raise ValueError(f"feature {name}: 1 to {MAX_PARENTS} parent players, got {ps}")
        parents[j, : len(ps)] = [index[p] for p in ps]
        n_parents[j] = len(ps)
    # every (feature, assignment) needs one hybrid record; identical ones are built once
    combos: dict[bytes, int] = {}
    masks: list[np.ndarray] = []
    slot_combo = np.zeros((n_feat, 1 << MAX_PARENTS), dtype=np.int64)
    for j in range(n_feat):
        for m in range(1 << n_parents[j]):
            mask = np.zeros(len(players), dtype=bool)
            for i in range(n_parents[j]):
                if m >> i & 1:
                    mask[parents[j, i]] = True
            key = mask.tobytes()
            if key not in combos:
                combos[key] = len(masks)
                masks.append(mask)
            slot_combo[j, m] = combos[key]
    return PlayerMap(
        players=players,
        feature_names=tuple(feature_names),
        parents=parents,
        n_parents=n_parents,
        feature_fn=feature_fn,
        _combo_masks=np.array(masks),
        _slot_combo=slot_combo,
    )


def _contract_features(columns: Mapping[str, np.ndarray]) -> np.ndarray:
    return feature_matrix(columns)


def input_players() -> PlayerMap:
    """The product's players: the contract's 16 inputs, through the feature definitions."""
    return make_player_map(PLAYERS, FEATURE_COLUMNS, FEATURE_INPUTS, _contract_features)


class _ColumnStack:
    """Feature function of :func:`feature_players`: the columns themselves, in order."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)

    def __call__(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.column_stack([np.asarray(columns[n], dtype=np.float64) for n in self.names])


def feature_players(names: Sequence[str]) -> PlayerMap:
    """Each feature of a numeric matrix is its own player (a model fitted on any features)."""
    names = tuple(str(n) for n in names)
    return make_player_map(names, names, {n: (n,) for n in names}, _ColumnStack(names))


def background_inputs(
    records: pd.DataFrame, size: int = DEFAULT_BACKGROUND_SIZE, seed: int = 0
) -> pd.DataFrame:
    """A seeded sample of at most ``size`` training patients' inputs (no patient key)."""
    missing = [p for p in PLAYERS if p not in records.columns]
    if missing:
        raise ValueError(f"background: missing input column(s) {missing}")
    rows = records if len(records) <= size else records.sample(n=size, random_state=seed)
    return rows[list(PLAYERS)].reset_index(drop=True)
