"""ftlab: an executable, checkable model of CPython's free-threaded memory runtime."""

from ftlab.config import Config
from ftlab.explore.execute import RunResult, run
from ftlab.runtime.pystate import Runtime

__all__ = ["Config", "Runtime", "RunResult", "run"]
__version__ = "0.1.0"
