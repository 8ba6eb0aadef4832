"""The cohort contract: one definition of a patient row, shared by files and the API.

A row is a pydantic model, so the API's request body and a cohort file are checked by the
same rules. Table-level rules (missing columns, duplicate keys, empty files) live in
:func:`validate_table`. We use pydantic rather than pandera so that one model serves both
the HTTP schema and the file checks, with no second copy of the rules.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated, Literal

import pandas as pd
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from features.config import ASSUMED_PRIMARY_FRACTION_GY

Sex = Literal["male", "female"]
RTStage = Literal["rT1", "rT2", "rT3", "rT4"]
Technique = Literal["2D", "3D", "IMRT", "unknown"]
DeathCause = Literal["alive", "haemorrhage", "progression", "other", "unknown"]

PATIENT_ID_MAX_LEN = 64
FRACTIONS_PER_DAY_ALLOWED = (1, 2)


def _once_or_twice_daily(value: int) -> int:
    if value not in FRACTIONS_PER_DAY_ALLOWED:
        raise ValueError("Input should be 1 or 2 (once or twice daily)")
    return value


class PatientInput(BaseModel):
    """What is known before re-irradiation: the inputs of the model and of the API."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    patient_id: Annotated[
        str,
        Field(
            min_length=1,
            max_length=PATIENT_ID_MAX_LEN,
            description="Pseudonymous key; never a name or a hospital number.",
        ),
    ]
    age_years: Annotated[float, Field(ge=18, le=100, description="Age at re-irradiation.")]
    sex: Sex
    rt_stage: Annotated[RTStage, Field(description="rT stage, AJCC/UICC 7th edition.")]
    nodal_recurrence: bool
    ttr_months: Annotated[
        float, Field(ge=1, le=600, description="End of first RT to recurrence, months.")
    ]
    gtv_cm3: Annotated[
        float, Field(gt=0, le=500, description="Recurrent gross tumour volume, cm3.")
    ]
    primary_dose_gy: Annotated[float, Field(ge=40, le=90)]
    primary_fraction_gy: Annotated[
        float | None,
        Field(
            default=None,
            ge=1.0,
            le=4.0,
            description=f"Empty: {ASSUMED_PRIMARY_FRACTION_GY} Gy is assumed and flagged.",
        ),
    ] = None
    primary_technique: Technique
    reirr_dose_gy: Annotated[float, Field(ge=20, le=90)]
    reirr_fraction_gy: Annotated[float, Field(ge=1.0, le=4.0)]
    reirr_fractions_per_day: Annotated[int, AfterValidator(_once_or_twice_daily)]
    chemotherapy: bool
    brachytherapy_boost: bool
    prior_grade3_toxicity: bool
    preexisting_necrosis: bool

    @model_validator(mode="after")
    def _finite_numbers(self) -> PatientInput:
        # the fields' values as stored (pydantic's __iter__ yields the same pairs, slower:
        # this runs for every row of a million-row file)
        for name, value in self.__dict__.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{name}: must be a finite number")
        return self


class PatientRecord(PatientInput):
    """A training row: the inputs plus the observed outcomes."""

    necrosis_event: bool
    necrosis_months: Annotated[float | None, Field(default=None, ge=0)] = None
    followup_months: Annotated[float, Field(ge=0)]
    death_cause: DeathCause

    @model_validator(mode="after")
    def _consistent_outcomes(self) -> PatientRecord:
        if self.necrosis_event and self.necrosis_months is None:
            raise ValueError("necrosis_months: necrosis_event is true but no time is given")
        if self.necrosis_months is not None and self.necrosis_months > self.followup_months:
            raise ValueError(
                "necrosis_months: necrosis after the last follow-up or the death "
                f"({self.necrosis_months:g} > followup_months {self.followup_months:g})"
            )
        return self


INPUT_COLUMNS: tuple[str, ...] = tuple(PatientInput.model_fields)
OUTCOME_COLUMNS: tuple[str, ...] = tuple(
    c for c in PatientRecord.model_fields if c not in PatientInput.model_fields
)
OPTIONAL_COLUMNS: frozenset[str] = frozenset({"primary_fraction_gy", "necrosis_months"})


@dataclass(frozen=True)
class Violation:
    """One broken rule: row is 1-based over data rows (None for a table-level problem)."""

    row: int | None
    column: str | None
    reason: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        where = "table" if self.row is None else f"row {self.row}"
        col = f", column {self.column}" if self.column else ""
        return f"{self.severity}: {where}{col}: {self.reason}"


@dataclass
class ValidationReport:
    """Every violation found in a table; nothing is loaded unless there are no errors."""

    errors: list[Violation] = field(default_factory=list)
    warnings: list[Violation] = field(default_factory=list)
    n_rows: int = 0
    records: list[PatientInput] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


class CohortValidationError(ValueError):
    """A table broke the contract; carries the full report."""

    def __init__(self, report: ValidationReport, max_shown: int = 20) -> None:
        self.report = report
        shown = "\n".join(str(v) for v in report.errors[:max_shown])
        more = len(report.errors) - max_shown
        tail = f"\n... and {more} more" if more > 0 else ""
        super().__init__(f"{len(report.errors)} contract violation(s):\n{shown}{tail}")


def _is_empty(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip() == ""
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _clean_cell(value: object) -> object:
    """Empty cells become None; numpy scalars become Python scalars for pydantic."""
    kind = type(value)
    if kind is str:  # the common case (a CSV's text), first: batch scoring reads millions
        return value if value.strip() else None
    if kind is float:
        return None if value != value else value  # NaN is empty
    if _is_empty(value):
        return None
    if hasattr(value, "item") and not isinstance(value, str):
        return value.item()
    return value


def _clean_column(values: list) -> list:
    """:func:`_clean_cell` of each of a column's values (text inline, the rest by the call)."""
    return [(v if v.strip() else None) if type(v) is str else _clean_cell(v) for v in values]


def _pydantic_violations(row: int, err: ValidationError, echo: bool = True) -> list[Violation]:
    """The contract's words for a row's pydantic errors; ``echo=False`` leaves out the submitted
    value (for files written beside the output, such as a batch's rejects)."""
    out = []
    for e in err.errors():
        loc = [str(p) for p in e["loc"] if not isinstance(p, int)]
        column = loc[0] if loc else None
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            continue  # unknown columns are reported once at table level
        if column is None and msg.startswith("Value error, "):
            text = msg.removeprefix("Value error, ")
            column, _, text = text.partition(": ")
            msg = text
        elif msg.startswith("Value error, "):
            msg = msg.removeprefix("Value error, ")
        inp = e.get("input")
        if e["type"] == "missing" or (inp is None and column):
            msg = "required value is empty"
        elif echo and column and not isinstance(inp, dict):
            msg = f"{msg} (got {inp!r})"
        out.append(Violation(row, column, msg))
    return out


@dataclass
class ColumnCheck:
    """Table-level verdict on a header: its errors and warnings, and how rows are read."""

    errors: list[Violation]
    warnings: list[Violation]
    model: type[PatientInput]
    fields: list[str]


def check_columns(columns: list[str], require_outcomes: bool = False) -> ColumnCheck:
    """The header's violations (duplicate, missing, unknown columns) and the row model.

    Outcome columns are required when ``require_outcomes`` (training); otherwise they are
    checked only if all are present (a file that is only scored may omit them).
    """
    errors: list[Violation] = []
    warnings: list[Violation] = []
    present = set(columns)
    for dup in sorted({c for c in columns if columns.count(c) > 1}):
        errors.append(Violation(None, dup, "column appears more than once"))
    required = [c for c in INPUT_COLUMNS if c not in OPTIONAL_COLUMNS]
    outcome_present = [c for c in OUTCOME_COLUMNS if c in present]
    with_outcomes = require_outcomes or bool(outcome_present)
    if with_outcomes:
        required += [c for c in OUTCOME_COLUMNS if c not in OPTIONAL_COLUMNS]
    for col in required:
        if col not in present:
            errors.append(Violation(None, col, "required column is missing"))
    known = set(INPUT_COLUMNS) | set(OUTCOME_COLUMNS)
    for col in columns:
        if col not in known:
            warnings.append(Violation(None, col, "unknown column is ignored", severity="warning"))
    model = PatientRecord if with_outcomes else PatientInput
    return ColumnCheck(errors, warnings, model, [c for c in model.model_fields if c in present])


def validate_rows(
    df: pd.DataFrame, check: ColumnCheck, first_row: int = 1, echo: bool = True
) -> Iterator[tuple[int, PatientInput | None, list[Violation]]]:
    """Each row of ``df`` checked by the contract: ``(row, record or None, violations)``.

    Rows are numbered from ``first_row`` (1-based over a file's data rows); one row's errors
    never touch another's, so a caller can keep the valid rows (batch scoring) or refuse the
    table (:func:`validate_table`). Duplicate keys are the caller's concern.
    """
    model = check.model
    fields = check.fields
    # cleaned column by column (a CSV's cells are text: one type test and a strip each),
    # then zipped into rows: half the cost of cleaning each row's tuple in a dict comprehension
    columns = [_clean_column(df[c].tolist()) for c in fields]
    for i, values in enumerate(zip(*columns, strict=True), start=first_row):
        data = dict(zip(fields, values, strict=True))
        try:
            yield i, model.model_validate(data), []
        except ValidationError as err:
            yield i, None, _pydantic_violations(i, err, echo)


def validate_table(df: pd.DataFrame, require_outcomes: bool = False) -> ValidationReport:
    """Check a cohort table against the contract and return every violation.

    Outcome columns are required when ``require_outcomes`` (training); otherwise they are
    checked only if all are present (a file that is only scored may omit them).
    """
    report = ValidationReport(n_rows=len(df))
    if not isinstance(df, pd.DataFrame) or df.shape[1] == 0:
        report.errors.append(Violation(None, None, "not a table: no columns found"))
        return report
    if len(df) == 0:
        report.errors.append(Violation(None, None, "the table has no data rows"))
        return report

    check = check_columns([str(c) for c in df.columns], require_outcomes)
    report.errors.extend(check.errors)
    report.warnings.extend(check.warnings)
    if report.errors:
        return report

    seen_ids: dict[str, int] = {}
    records: list[PatientInput] = []
    for i, rec, problems in validate_rows(df, check):
        if rec is None:
            report.errors.extend(problems)
            continue
        if rec.patient_id in seen_ids:
            report.errors.append(
                Violation(i, "patient_id", f"duplicate of row {seen_ids[rec.patient_id]}")
            )
        else:
            seen_ids[rec.patient_id] = i
        report.warnings.extend(_row_warnings(i, rec))
        records.append(rec)
    if not report.errors:
        report.records = records
    return report


def _row_warnings(row: int, rec: PatientInput) -> list[Violation]:
    out = []
    if rec.primary_fraction_gy is None:
        out.append(
            Violation(
                row,
                "primary_fraction_gy",
                f"empty: {ASSUMED_PRIMARY_FRACTION_GY} Gy per fraction is assumed",
                severity="warning",
            )
        )
    if (
        isinstance(rec, PatientRecord)
        and rec.death_cause == "haemorrhage"
        and not rec.necrosis_event
    ):
        out.append(
            Violation(
                row,
                "death_cause",
                "haemorrhage death without a recorded necrosis (accepted)",
                severity="warning",
            )
        )
    return out


def validated_frame(df: pd.DataFrame, require_outcomes: bool = False) -> pd.DataFrame:
    """Return the table as typed, validated records, or raise with every violation.

    Nothing is half-loaded: any error refuses the whole table.
    """
    report = validate_table(df, require_outcomes=require_outcomes)
    if not report.ok:
        raise CohortValidationError(report)
    out = pd.DataFrame([r.model_dump() for r in report.records])
    if "necrosis_months" in out.columns:
        # Empty necrosis time without necrosis is read as the follow-up time (design.md).
        out["necrosis_months"] = out["necrosis_months"].fillna(out["followup_months"])
    return out
