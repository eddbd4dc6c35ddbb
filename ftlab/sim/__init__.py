"""The simulated machine: address space, atomics, virtual threads, strategies, race detection."""

from ftlab.sim.atomics import ACQ_REL, ACQUIRE, RELAXED, RELEASE, SEQ_CST, Memory, Order, as_signed
from ftlab.sim.machine import Event, Machine, VThread
from ftlab.sim.memory import AddressSpace, Tag
from ftlab.sim.race import RaceDetector
from ftlab.sim.schedule import ScheduleError, decode, encode
from ftlab.sim.strategies import DFS, PCT, Random, Replay, RoundRobin, Strategy
from ftlab.sim.sync import Event as SimEvent
from ftlab.sim.sync import Mutex
from ftlab.sim.violation import Violation, ViolationError

__all__ = [
    "ACQ_REL", "ACQUIRE", "RELAXED", "RELEASE", "SEQ_CST", "AddressSpace", "DFS", "Event",
    "Machine", "Memory", "Mutex", "Order", "PCT", "RaceDetector", "Random", "Replay",
    "RoundRobin", "ScheduleError", "SimEvent", "Strategy", "Tag", "VThread", "Violation",
    "ViolationError", "as_signed", "decode", "encode",
]
