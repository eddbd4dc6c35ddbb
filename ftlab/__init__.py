"""ftlab: an executable, checkable model of CPython's free-threaded memory runtime."""

from ftlab.config import Config
from ftlab.explore.execute import RunResult, run
from ftlab.explore.campaign import CampaignResult
from ftlab.runtime.pystate import Runtime

from ftlab import explore  # noqa: E402  the package is callable: explore(...) runs a campaign

__all__ = ["CampaignResult", "Config", "Runtime", "RunResult", "explore", "run"]
__version__ = "0.1.0"
