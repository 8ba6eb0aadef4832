"""The floor of issue 11's speed targets: a trivial BentoML service that echoes a patient.

Same server (BentoML 1.4, one worker), same request body as ``/score``, no model, no gate, no
audit: what any BentoML endpoint costs on this machine. Used by ``benchmarks/bench_api.py``.
"""

from __future__ import annotations

from typing import Any

import bentoml


@bentoml.service(name="echo", workers=1)
class Echo:
    @bentoml.api(route="/score")
    def score(self, patient: dict[str, Any]) -> dict[str, Any]:
        return {"patient": patient}
