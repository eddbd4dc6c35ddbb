"""Property-based fuzzing of every parser the user reaches through `ftlab`: schedule strings,
strategy specs, cluster addresses (IPv4, IPv6, host names), numeric options, scenario and
mutation names, stored ids. Whatever the input: exit 0, 1 or 2, never 3, never a traceback;
exit 2 is one line on stderr, and nothing is written.

Each property runs a few dozen examples in the default suite and many more under the slow
marker. Cluster addresses are parsed, never connected to: no example reaches the network."""

from __future__ import annotations

import contextlib
import ipaddress
import string

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from ftlab import cli
from ftlab.config import MUTATIONS
from ftlab.explore.backends import parse_cluster_address
from ftlab.explore.portfolio import ExploreError, parse_spec
from ftlab.scenarios import catalog

FAST, MANY = 25, 400
_HEALTH = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
SCENARIOS = sorted(catalog())
VALID_SCHEDULE = None


def _both(**strategies):
    """The property as two tests: a few examples in the default suite, many under `slow`."""
    def deco(body):
        fast = settings(max_examples=FAST, deadline=None, suppress_health_check=_HEALTH,
                        database=None)(given(**strategies)(body))
        many = pytest.mark.slow(settings(max_examples=MANY, deadline=None,
                                         suppress_health_check=_HEALTH,
                                         database=None)(given(**strategies)(body)))
        return fast, many
    return deco


def _run(capsys, argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    with contextlib.suppress(InvalidArgument):   # outside a property: no statistics
        event(f"{argv[0]}: exit {code}")
    assert code in (0, 1, 2), (argv, code, err)
    assert "Traceback" not in err and "internal error" not in err, (argv, err)
    if code == 2:
        lines = err.strip().splitlines()
        assert lines and all(x.startswith("ftlab: ") for x in lines), (argv, err)
        assert len([x for x in lines if "note:" not in x]) == 1, err
    return code, out, err


# Text a user might type: printable, unicode, control characters, shell leftovers.
_junk = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=string.printable, max_size=40),
    st.sampled_from(["", " ", "-1", "0", "1e3", "0x10", "１２", "²", "\x00", "9" * 30, "nan",
                     "inf", "-", "--", ":", "::", "a:b:c", "S1:", "S1:.", "S2:a.b"]),
)


def _valid_schedule() -> str:
    from ftlab.explore.execute import run
    from ftlab.config import Config
    from ftlab.scenarios import get
    from ftlab.sim.strategies import Random

    global VALID_SCHEDULE
    if VALID_SCHEDULE is None:
        r = run(get("lost-update"), Config(mutations=frozenset({"unsync-rmw"})), Random(3))
        VALID_SCHEDULE = r.schedule
    return VALID_SCHEDULE


@st.composite
def _schedules(draw) -> str:
    """Random text, and edits of a real schedule string (a character changed, cut, doubled)."""
    if draw(st.booleans()):
        return draw(_junk)
    s = _valid_schedule()
    i = draw(st.integers(0, len(s)))
    edit = draw(st.sampled_from(["replace", "cut", "insert", "double", "keep"]))
    if edit == "replace" and i < len(s):
        return s[:i] + draw(st.characters()) + s[i + 1:]
    if edit == "cut":
        return s[:i]
    if edit == "insert":
        return s[:i] + draw(st.text(max_size=3)) + s[i:]
    if edit == "double":
        return s + s[i:]
    return s


# ---------------------------------------------------------------------------------------------
# Schedule strings, stored ids

@_both(schedule=_schedules(), mutate=st.booleans())
def _schedule_prop(capsys, schedule, mutate):
    assume("\x00" not in schedule)
    argv = ["replay", "lost-update", schedule] + (["--mutate", "unsync-rmw"] if mutate else [])
    _run(capsys, argv)


test_schedule_strings_never_crash, test_schedule_strings_never_crash_many = _schedule_prop


@_both(target=_junk)
def _replay_id_prop(capsys, tmp_path_factory, target):
    assume("\x00" not in target)
    db = tmp_path_factory.mktemp("ids") / "none.sqlite"
    for argv in (["replay", target], ["shrink", target], ["explore", "--resume", target]):
        code, _, err = _run(capsys, [*argv, "--db", db])
        assert code == 2, err
    assert not db.exists()


test_stored_ids_never_crash, test_stored_ids_never_crash_many = _replay_id_prop


# ---------------------------------------------------------------------------------------------
# Strategy specs

_specs = st.one_of(
    _junk,
    st.builds(lambda n, a: f"{n}:{a}", st.sampled_from(["random", "pct", "dfs", "rr",
                                                        "roundrobin", "replay", "PCT", "dfs "]),
              st.one_of(st.integers(-5, 10**12).map(str), _junk)),
    st.sampled_from(["random", "pct", "dfs", "rr", "roundrobin"]),
)


@_both(spec=_specs)
def _spec_prop(capsys, spec):
    assume("\x00" not in spec)
    try:
        parsed = parse_spec(spec)
    except ExploreError:
        parsed = None
    if parsed is not None:
        assert parse_spec(str(parsed)) == parsed      # what is stored reads back the same
    _run(capsys, ["run", "lost-update", "--strategy", spec, "--runs", "3"])


test_strategy_specs_never_crash, test_strategy_specs_never_crash_many = _spec_prop


@_both(spec=_specs)
def _explore_spec_prop(capsys, tmp_path_factory, spec):
    assume("\x00" not in spec)
    db = tmp_path_factory.mktemp("spec") / "r.sqlite"
    code, _, _ = _run(capsys, ["explore", "lost-update", "--mutate", "none", "--strategy", spec,
                               "--budget", "2", "--workers", "1", "--db", db])
    if code == 2:
        assert not db.exists()


test_explore_strategy_specs_never_crash, test_explore_strategy_specs_never_crash_many = _explore_spec_prop


# ---------------------------------------------------------------------------------------------
# Cluster addresses (parsed only: nothing is connected to)

_hostnames = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?){0,3}\Z")
_schemes = st.sampled_from(["tcp://", "tls://", "ws://", "wss://", "ucx://", ""])


@st.composite
def _good_addresses(draw) -> tuple[str, str, int]:
    kind = draw(st.sampled_from(["v4", "v6", "name"]))
    if kind == "v4":
        host = str(draw(st.ip_addresses(v=4)))
        loc = host
    elif kind == "v6":
        host = str(draw(st.ip_addresses(v=6)))
        loc = f"[{host}]"
    else:
        host = draw(_hostnames)
        assume(not host.replace(".", "").isdigit())
        loc = host
    port = draw(st.integers(1, 65535))
    return f"{draw(_schemes)}{loc}:{port}", host, port


@_both(address=_good_addresses())
def _good_address_prop(address):
    from distributed.comm.addressing import parse_address, parse_host_port

    text, host, port = address
    parsed = parse_cluster_address(text)
    scheme, loc = parse_address(parsed)
    h, p = parse_host_port(loc)
    assert p == port
    assert h == host or ipaddress.ip_address(h) == ipaddress.ip_address(host)


test_every_dask_address_form_is_accepted, test_every_dask_address_form_is_accepted_many = _good_address_prop


_bad_addresses = st.one_of(
    _junk,
    st.builds(lambda s, h, p: f"{s}{h}:{p}", st.sampled_from(["tcp://", "http://", "inproc://", "",
                                                             "tcp:/", "tcp:///"]),
              st.one_of(_junk, _hostnames, st.ip_addresses().map(str)),
              st.one_of(st.integers(-10, 10**6).map(str), _junk)),
)


@_both(address=_bad_addresses)
def _address_prop(capsys, tmp_path_factory, address):
    assume("\x00" not in address)
    try:
        parse_cluster_address(address)
    except ExploreError:
        pass
    else:
        assume(False)          # a well-formed address: the CLI would connect to it
    db = tmp_path_factory.mktemp("cluster") / "r.sqlite"
    code, _, err = _run(capsys, ["explore", "lost-update", "--cluster", address, "--db", db])
    assert code == 2 and "cluster" in err, err
    assert not db.exists()


test_bad_cluster_addresses_are_refused, test_bad_cluster_addresses_are_refused_many = _address_prop


def test_known_cluster_address_forms():
    assert parse_cluster_address("tcp://[::1]:8786") == "tcp://[::1]:8786"
    assert parse_cluster_address("127.0.0.1:8786") == "tcp://127.0.0.1:8786"
    assert parse_cluster_address(" tls://scheduler.example.org:8786 ") == "tls://scheduler.example.org:8786"
    for bad, why in [("", "empty"), ("  ", "empty"), ("tcp://::1:8786", "brackets"),
                     ("tcp://[::1]", "missing port"), ("tcp://h:0", "port 0"),
                     ("inproc://10.0.0.1/1/2", "inside one process"), ("http://h:1", "unknown scheme"),
                     ("tcp://a b:1", "expected tcp://HOST:PORT")]:
        with pytest.raises(ExploreError, match=why):
            parse_cluster_address(bad)


def test_empty_cluster_is_refused_not_run_locally(capsys, tmp_path):
    code, _, err = _run(capsys, ["explore", "lost-update", "--cluster", "", "--db", tmp_path / "r.sqlite"])
    assert code == 2 and "empty cluster address" in err
    assert not (tmp_path / "r.sqlite").exists()


# ---------------------------------------------------------------------------------------------
# Numeric options (parsed: a valid value may mean hours of work)

_NUMERIC = [("run", "--seed"), ("run", "--runs"), ("explore", "--budget"), ("explore", "--seed"),
            ("explore", "--workers"), ("explore", "--batch"), ("shrink", "--max-runs"),
            ("simulate", "--threads"), ("report", "--campaign")]


@_both(option=st.sampled_from(_NUMERIC), value=st.one_of(_junk, st.integers(-2**70, 2**70).map(str)))
def _numeric_prop(option, value):
    assume("\x00" not in value)
    command, flag = option
    head = {"run": ["run", "lost-update"], "shrink": ["shrink", "1"]}.get(command, [command])
    parser = cli.build_parser()
    try:
        args = parser.parse_args([*head, flag, value])
    except cli.BadInput as e:
        assert flag in str(e) or "argument" in str(e), e
        return
    parsed = getattr(args, flag.lstrip("-").replace("-", "_"))
    assert isinstance(parsed, int) and parsed >= 0
    assert parsed == int(value.strip())


test_numeric_options_never_crash, test_numeric_options_never_crash_many = _numeric_prop


# ---------------------------------------------------------------------------------------------
# Scenario and mutation names

_names = st.one_of(_junk, st.sampled_from(SCENARIOS + list(MUTATIONS) + ["none", "all"]),
                   st.sampled_from(SCENARIOS).map(str.upper))


@_both(scenario=_names, mutation=_names)
def _names_prop(capsys, tmp_path_factory, scenario, mutation):
    assume("\x00" not in scenario + mutation)
    assume(not scenario.startswith("-") and not mutation.startswith("-"))
    _run(capsys, ["run", scenario, "--mutate", mutation])
    db = tmp_path_factory.mktemp("names") / "r.sqlite"
    code, _, _ = _run(capsys, ["explore", scenario, "--mutate", mutation, "--budget", "3",
                               "--workers", "1", "--no-shrink", "--db", db])
    if code == 2:
        assert not db.exists()


test_scenario_and_mutation_names_never_crash, test_scenario_and_mutation_names_never_crash_many = _names_prop


def test_ipv6_cluster_address_is_tried_not_refused(capsys, tmp_path):
    """`tcp://[::1]:PORT` is well formed: with nobody listening it does not answer (exit 2,
    nothing written), and is never called malformed."""
    import socket

    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
            port = s.getsockname()[1]
    except OSError:
        pytest.skip("no IPv6 loopback here")
    code, _, err = _run(capsys, ["explore", "lost-update", "--cluster", f"tcp://[::1]:{port}",
                                 "--db", tmp_path / "r.sqlite"])
    assert code == 2 and "does not answer" in err and "bad cluster address" not in err, err
    assert not (tmp_path / "r.sqlite").exists()
