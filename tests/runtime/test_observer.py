from ftlab.runtime import Runtime
from ftlab.runtime.observer import Observer


class _Log(Observer):
    def __init__(self, log, tag):
        self.log, self.tag = log, tag

    def block_freed(self, t, ptr):
        self.log.append((self.tag, ptr))


def test_events_reach_every_observer_in_order():
    rt = Runtime()
    log = []
    rt.add_observer(_Log(log, "a"))
    rt.add_observer(_Log(log, "b"))
    rt.add_observer(_Log(log, "c"))
    rt.observer.block_freed(None, 16)
    assert log == [("a", 16), ("b", 16), ("c", 16)]


def test_unobserved_runtime_ignores_events():
    rt = Runtime()
    rt.observer.block_freed(None, 16)  # the no-op default
    assert type(rt.observer) is Observer
