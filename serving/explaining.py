"""`/explain`: exact Shapley attributions of one patient's served risk, at chosen horizons.

Serving asks :class:`models.explain.BundleExplainer` (built once per worker) and stays generic
over the explanation's players (``Explanation.feature_names``): the contract's 16 inputs
(interventional values against the bundle's background sample, for a forest, a Cox model or
their ensemble alike); for an older forest bundle without a background, the model's features
with the four first-course technique indicators shown as one input (``Explanation.grouped``).
The served risk is computed by the bundle's own prediction (``/score``'s code path) and the
explanation must add up to it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from features.schema import PatientInput
from models.bundle import ModelBundle
from models.explain import ADDITIVITY_TOL, BundleExplainer, top_factors
from serving.schemas import HorizonExplanation
from serving.scoring import check_horizons

N_TOP_FACTORS = 5
"""Factors in words per horizon (the report shows the same number)."""


class ExplanationMismatchError(RuntimeError):
    """The explanation does not add up to the served risk: a bug, never answered."""


def explain_patient(
    bundle: ModelBundle,
    explainer: BundleExplainer,
    patient: PatientInput,
    endpoint: str,
    horizons: Sequence[float],
) -> tuple[list[HorizonExplanation], str]:
    """Attributions of ``endpoint``'s risk at each horizon, and the value function's name.

    ``risk`` is the served CIF (``/score``'s number); ``base_value`` plus the attributions
    equals it to ``ADDITIVITY_TOL``, which is checked here on every call.
    """
    h = check_horizons(bundle, horizons)
    X = bundle.features_from_inputs([patient])
    served = bundle.predict_cif_features(X, h, endpoints=[endpoint])[endpoint][0]
    # only the horizons asked for: each the same, bit for bit, as in the whole grid's
    # explanation, at a fraction of the cost
    exp = explainer.explain([patient], endpoints=[endpoint], times=h)[endpoint].grouped()
    out = []
    for j, months in enumerate(h):
        base, phi, _ = exp.at(months)
        risk = float(served[j])
        total = base + float(np.sum(phi[0]))
        if not abs(total - risk) <= ADDITIVITY_TOL:
            raise ExplanationMismatchError(
                f"{endpoint} at {months:g} months: base + attributions differ from the served "
                f"risk by {abs(total - risk):.3g}"
            )
        out.append(
            HorizonExplanation(
                months=float(months),
                base_value=base,
                risk=risk,
                attributions={
                    name: float(v) for name, v in zip(exp.feature_names, phi[0], strict=True)
                },
                top_factors=[
                    f.sentence for f in top_factors(exp, 0, float(months), N_TOP_FACTORS)
                ],
            )
        )
    return out, exp.method
