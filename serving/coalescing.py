"""Concurrent one-patient ``/score`` calls share one prediction (micro-batching on the loop).

Why: a served prediction of one patient is mostly fixed cost, the Python around the models
and the caches the trees have to be read back into (1.7 ms with cold caches for one patient,
2.5 ms for four, on this project's 2-core machine). When calls overlap, the ones waiting on
the event loop are predicted together. A patient's numbers do not depend on the other rows
of a prediction (tests/test_fast_paths.py), so coalescing never changes an answer; a call
alone waits two turns of the event loop, microseconds. BentoML's adaptive batching would do
this for an API whose clients send lists; ``/score`` takes one patient (its wire contract), so
the coalescing happens here, on the same event loop that serves the call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from features.schema import PatientInput
from models.bundle import ModelBundle
from serving import scoring
from serving.schemas import PatientScore

MAX_COALESCED = 32
"""Most patients predicted together: beyond a few the saving is made, and a long batch would
hold the event loop (and every other call) for its whole duration."""


@dataclass
class _Waiting:
    patient: PatientInput
    horizons: tuple[float, ...]
    include_curve: bool
    future: asyncio.Future = field(repr=False)


class ScoreCoalescer:
    """Scores one patient per call; calls waiting together are predicted together.

    A prediction that fails is retried patient by patient, so that each call gets the answer
    or the error it would have had alone. ``calls`` and ``predictions`` count what happened
    (a test checks that overlapping calls were coalesced).
    """

    def __init__(self, bundle: ModelBundle, max_batch: int = MAX_COALESCED) -> None:
        self.bundle = bundle
        self.max_batch = max_batch
        self._waiting: list[_Waiting] = []
        self.calls = 0
        self.predictions = 0

    async def score(
        self, patient: PatientInput, horizons: Sequence[float], include_curve: bool
    ) -> PatientScore:
        """This patient's risks, as :func:`serving.scoring.score_patient` gives them."""
        loop = asyncio.get_running_loop()
        waiting = _Waiting(patient, tuple(horizons), include_curve, loop.create_future())
        self._waiting.append(waiting)
        self.calls += 1
        if len(self._waiting) == 1:
            # two turns of the loop: calls whose requests arrived in the same poll join in
            loop.call_soon(loop.call_soon, self._flush)
        return await waiting.future

    def _flush(self) -> None:
        waiting, self._waiting = self._waiting, []
        groups: dict[tuple[tuple[float, ...], bool], list[_Waiting]] = {}
        for w in waiting:
            if not w.future.done():  # a call cancelled meanwhile (client gone) is dropped
                groups.setdefault((w.horizons, w.include_curve), []).append(w)
        for members in groups.values():
            for start in range(0, len(members), self.max_batch):
                self._predict(members[start : start + self.max_batch])

    def _predict(self, members: list[_Waiting]) -> None:
        first = members[0]
        self.predictions += 1
        try:
            results = scoring.score_patients(
                self.bundle, [w.patient for w in members], first.horizons, first.include_curve
            )
        except Exception as err:
            if len(members) > 1:
                for w in members:
                    self._predict([w])
            elif not first.future.done():
                first.future.set_exception(err)
            return
        for w, result in zip(members, results, strict=True):
            if not w.future.done():
                w.future.set_result(result)
