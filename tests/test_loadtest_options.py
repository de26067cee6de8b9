"""The `loadtest` sub-command: registration, defaults, bounds and environment."""

from __future__ import annotations

import argparse

import pytest

from loadtest.cli import register
from loadtest.options import SCENARIOS, OptionsError, from_namespace
from loadtest.scenarios import SCENARIOS as IMPLEMENTED

NATIVE = ["--secret", "s", "--driver", "native"]


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="livemart")
    register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["loadtest", *argv])


def test_every_named_scenario_is_implemented() -> None:
    assert set(SCENARIOS) == set(IMPLEMENTED)


def test_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEMART_SECRET", "from-env")
    monkeypatch.setenv("LIVEMART_API_KEY", "key-from-env")
    args = _parse(["viewers", "--url", "http://127.0.0.1:8000/"])
    assert callable(args.handler)
    opts = from_namespace(args)
    assert (opts.scenario, opts.url, opts.ws_url) == (
        "viewers",
        "http://127.0.0.1:8000",
        "ws://127.0.0.1:8000/ws",
    )
    assert (opts.viewers, opts.rooms, opts.rate, opts.duration, opts.workers) == (100, 1, 10.0, 10.0, 1)
    assert (opts.secret, opts.api_key, opts.protocol) == ("from-env", "key-from-env", "json")
    assert opts.driver == "python"


def test_flags_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEMART_SECRET", "from-env")
    argv = [
        "groups",
        "--url",
        "https://live.example:8443",
        "--secret",
        "s",
        "--viewers",
        "40",
        "--groups",
        "4",
    ]
    opts = from_namespace(_parse([*argv, "--workers", "2", "--protocol", "msgpack", "--rate", "2.5"]))
    assert (opts.secret, opts.groups, opts.workers, opts.rate) == ("s", 4, 2, 2.5)
    assert opts.ws_url == "wss://live.example:8443/ws"
    assert opts.protocol == "msgpack"


@pytest.mark.parametrize(
    "argv",
    [
        ["viewers", "--url", "x", "--viewers", "0"],
        ["viewers", "--url", "x", "--rate", "-1"],
        ["viewers", "--url", "x", "--duration", "100000"],
        ["viewers", "--url", "x", "--workers", "ten"],
        ["viewers", "--url", "x", "--protocol", "xml"],
        ["lottery", "--url", "x"],
    ],
)
def test_out_of_bounds_values_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        _parse(argv)
    assert exited.value.code == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["comments", "--url", "http://h:1"], "LIVEMART_SECRET"),
        (["viewers", "--url", "http://h:1", "--secret", "s"], "api-key"),
        (["comments", "--url", "ws://h:1", "--secret", "s"], "--url"),
        (["comments", "--url", "http://h:1", "--secret", "s", "--viewers", "2", "--workers", "3"], "workers"),
        (["groups", "--url", "http://h:1", "--secret", "s", "--viewers", "2", "--groups", "3"], "groups"),
        ([*NATIVE, "comments", "--url", "http://h:1"], "flashsale and groups"),
        ([*NATIVE, "groups", "--url", "https://h:1"], "ws://"),
        ([*NATIVE, "groups", "--url", "http://h:1", "--protocol", "msgpack"], "json"),
        ([*NATIVE, "flashsale", "--url", "http://h:1", "--workers", "2"], "workers"),
        ([*NATIVE, "flashsale", "--url", "http://h:1", "--ramp", "1"], "ramp"),
    ],
)
def test_unusable_combinations_name_the_option(
    argv: list[str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LIVEMART_SECRET", raising=False)
    monkeypatch.delenv("LIVEMART_API_KEY", raising=False)
    with pytest.raises(OptionsError, match=message):
        from_namespace(_parse(argv))
