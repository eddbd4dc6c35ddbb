"""An executable model of mimalloc v2.1.2 as vendored by CPython 3.13/3.14 (`Objects/mimalloc/`).

One module per concept, each named after the mimalloc source it models:

* `types` (`include/mimalloc/types.h`): layout constants, enums, CPython's heap tags, and the
  `MiBuild` flags of the release (`MI_DEBUG` 0) and `Py_DEBUG` (`MI_DEBUG` 2) builds.
* `bins` (`src/page-queue.c`, `src/segment.c`, `src/alloc.c`): size classes, page kinds and
  geometry, and what a request really gets. These are pure functions.

The reference is `reference/mimalloc.md`. Where it is not precise enough, the v2.1.2 source is.
"""

from ftlab.runtime.mimalloc.bins import bin_index, bin_size, good_size, usable_size
from ftlab.runtime.mimalloc.types import MiBuild

__all__ = ["MiBuild", "bin_index", "bin_size", "good_size", "usable_size"]
