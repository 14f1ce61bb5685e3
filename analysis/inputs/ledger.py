"""The one ledger of excluded runs: every run a stage leaves out, recorded once, with the stage and
the reason.

A stage returns what it leaves out (run -> reason); whoever assembles the analysis records it, and
a run already in the ledger keeps its first entry. The stages, in the order they run:
- `inputs`: the run cannot be used at all (unfinished, no final loss, no parameter count;
  analysis.inputs.runs.finalize, whose `reason` column holds these);
- `lr`: not kept by the LR choice (analysis.readings.lr_selection);
- `cooldown`: a WSD main run in a family with cooldown branches (analysis.readings.trajectory);
- `asymptote`: a Dense run at or below the fixed b, left out of L(N) (analysis.scaling);
- `paper view`: a Leviathan run without an effective size (analysis.readings.paper_view).
The first four leave a run out of the fits; the last only leaves it without a reading. The
summary lists the former in the runs table's order, then the latter in the order they were found.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

BEFORE_FITS = ("inputs", "lr", "cooldown", "asymptote")
ENTRY = ["run_id", "stage", "reason"]
SHOWN = ["run_id", "name", "arm", "size", "family", "loss", "reason"]


@dataclass(frozen=True)
class Ledger:
    """The runs left out so far: one entry per run (ENTRY), in the order they were recorded."""

    entries: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=ENTRY))

    def record(self, stage: str, reasons: pd.Series) -> Ledger:
        """A ledger with `reasons` (run_id -> reason; '' = kept) of `stage` added, in their
        order; a run already recorded keeps its first entry."""
        new = reasons[(reasons != "") & ~reasons.index.isin(self.entries["run_id"])]
        if new.empty:
            return self
        add = pd.DataFrame({"run_id": new.index, "stage": stage, "reason": new.to_numpy()})
        return Ledger(pd.concat([self.entries, add], ignore_index=True) if len(self.entries)
                      else add)

    def reason(self, run_ids: pd.Series) -> pd.Series:
        """Each run's reason ('' when it is not in the ledger), aligned with `run_ids`."""
        by_run = dict(zip(self.entries["run_id"], self.entries["reason"], strict=True))
        return pd.Series([by_run.get(r, "") for r in run_ids], index=run_ids.index, dtype=object)

    def usable(self, table: pd.DataFrame) -> pd.DataFrame:
        """The rows of `table` whose run is not in the ledger."""
        return table[~table["run_id"].isin(self.entries["run_id"])]

    def annotate(self, table: pd.DataFrame) -> pd.DataFrame:
        """`table` with its `reason` column from the ledger."""
        return table.assign(reason=self.reason(table["run_id"]))

    def shown(self, table: pd.DataFrame) -> pd.DataFrame:
        """The excluded runs as the summary and fit.json list them (SHOWN): those left out of
        the fits in the order of `table`, then the rest in the order recorded."""
        e = self.entries
        position = pd.Series(np.arange(len(table)), index=table["run_id"].to_numpy())
        before = e["stage"].isin(BEFORE_FITS).to_numpy()
        order = np.where(before, position.reindex(e["run_id"]).to_numpy(),
                         len(table) + np.arange(len(e)))
        rows = table.set_index("run_id").loc[e["run_id"].to_numpy()[np.argsort(order,
                                                                          kind="stable")]]
        return rows.reset_index().assign(reason=lambda d: self.reason(d["run_id"]))[SHOWN]
