"""Campaigns: the strategy portfolio, parallel execution (local processes, a Dask cluster),
shrinking, replay and the SQLite campaign store.

The package itself is callable: `from ftlab import explore; explore(budget=200)` runs a
campaign (`ftlab.explore.campaign.explore`) and returns a `CampaignResult`, while
`ftlab.explore.shrink`, `ftlab.explore.store` ... stay importable as modules.
"""

from __future__ import annotations

import sys
import types


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from ftlab.explore.campaign import explore

        return explore(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
