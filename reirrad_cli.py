"""The `reirrad` command: composes the commands that each package owns.

Thin by design (design.md): no package imports this module.
"""

from __future__ import annotations

import typer

from features.cli import app as cohort_app

app = typer.Typer(
    help="reirrad: risk of severe late toxicity after re-irradiation of recurrent "
    "nasopharyngeal carcinoma. Research software trained on synthetic data; not a "
    "medical device.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(cohort_app, name="cohort")


if __name__ == "__main__":
    app()
