"""``make reproduce``: run the papers' settings from ``examples/reproduce/`` and write
``docs/results.md`` (tables, figures, verdicts measured from the runs)."""
