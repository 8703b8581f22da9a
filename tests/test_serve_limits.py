"""``percept serve``'s limit flags and its warning when it can be reached from other machines."""

from __future__ import annotations

import pytest

from percept.cli.main import build_parser
from percept.cli.serve import exposure_warning


@pytest.mark.parametrize("host,allowed,warns", [
    ("127.0.0.1", [], False),
    ("localhost", [], False),
    ("::1", [], False),
    ("[::1]", [], False),
    ("0.0.0.0", [], True),
    ("::", [], True),
    ("192.168.1.20", [], True),
    ("0.0.0.0", ["percept.example"], False),
])
def test_warning_when_reachable_from_other_machines(host, allowed, warns):
    warning = exposure_warning(host, allowed)
    assert (warning is not None) is warns
    if warns:
        assert warning.startswith("warning: ") and "--allow-host" in warning and "\n" not in warning


def test_limit_flags():
    args = build_parser(["serve"]).parse_args(["serve", "--model", "m.npz", "--read-timeout", "2.5",
                                               "--max-uploads", "3", "--upload-memory-mb", "64"])
    assert (args.read_timeout, args.max_uploads, args.upload_memory_mb) == (2.5, 3, 64)
    defaults = build_parser(["serve"]).parse_args(["serve", "--model", "m.npz"])
    assert (defaults.read_timeout, defaults.max_uploads, defaults.upload_memory_mb) == (5.0, 32, 256)


@pytest.mark.parametrize("flag,value", [("--max-uploads", "0"), ("--read-timeout", "-1"),
                                        ("--upload-memory-mb", "nan")])
def test_bad_limits_are_refused(flag, value, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser(["serve"]).parse_args(["serve", "--model", "m.npz", flag, value])
    assert exit_.value.code == 2 and flag in capsys.readouterr().err
