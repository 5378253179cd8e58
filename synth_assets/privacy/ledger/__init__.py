"""Privacy budget ledger: every DP release from a dataset's private data, kept in its DuckDB warehouse.

:mod:`~synth_assets.privacy.ledger.records` says what a release is and when two are the same one (a
re-run is free, a re-sample is not); :mod:`~synth_assets.privacy.ledger.store` keeps them in the
warehouse file, charges the budget per dataset name and serialises writers;
:mod:`~synth_assets.privacy.ledger.reports` composes the totals, decides whether a materialization fits
the budget and shows the ledger.
"""

from synth_assets.privacy.ledger.records import LedgerRelease
from synth_assets.privacy.ledger.reports import BudgetCheck, Spent, format_ledger, ledger_view
from synth_assets.privacy.ledger.store import BudgetExceeded, LedgerBusy, PrivacyLedger, check_budget

__all__ = [
    "BudgetCheck",
    "BudgetExceeded",
    "LedgerBusy",
    "LedgerRelease",
    "PrivacyLedger",
    "Spent",
    "check_budget",
    "format_ledger",
    "ledger_view",
]
