"""gba_lens.wandb_run: the one W&B mode rule, run start/finish and the once-warning guard."""
from __future__ import annotations

import os
import socket
import warnings

import pytest
import wandb

from gba_lens import wandb_run
from gba_lens.wandb_run import WandbGuard, finish_run, start_run, wandb_configured, wandb_mode

# Keys wandb itself may add to the environment (the socket of its background service).
_WANDB_OWN_KEYS = {"WANDB_SERVICE"}


@pytest.fixture
def clean_env(tmp_path, monkeypatch):
    """No W&B configuration at all: fake HOME without netrc, no key, no mode."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for key in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_DISABLED", "NETRC", "WANDB_INIT_TIMEOUT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    yield home
    finish_run()


def _write_netrc(home, host="api.wandb.ai"):
    path = home / ".netrc"
    path.write_text(f"machine {host}\n  login user\n  password {'k' * 40}\n")
    path.chmod(0o600)
    return path


def _env_snapshot():
    return {k: v for k, v in os.environ.items() if k not in _WANDB_OWN_KEYS}


# ----------------------------------------------------------------------------------- mode rule
def test_unconfigured_is_offline(clean_env):
    assert not wandb_configured()
    assert wandb_mode() == "offline"


def test_api_key_is_online(clean_env, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert wandb_mode() == "online"


def test_netrc_login_is_online(clean_env):
    _write_netrc(clean_env)
    assert wandb_configured()
    assert wandb_mode() == "online"


def test_netrc_for_another_host_is_offline(clean_env):
    _write_netrc(clean_env, host="example.org")
    assert wandb_mode() == "offline"


def test_netrc_follows_base_url_and_netrc_variable(clean_env, tmp_path, monkeypatch):
    other = tmp_path / "elsewhere"
    other.mkdir()
    path = _write_netrc(other, host="wandb.mycorp.example")
    monkeypatch.setenv("NETRC", str(path))
    assert wandb_mode() == "offline"  # entry is for another host than api.wandb.ai
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.mycorp.example")
    assert wandb_mode() == "online"


def test_unreadable_netrc_is_offline(clean_env):
    (clean_env / ".netrc").write_text("machine\n")  # parse error
    assert wandb_mode() == "offline"


@pytest.mark.parametrize(
    "value, expected",
    [("online", "online"), ("offline", "offline"), ("disabled", "disabled"), ("dryrun", "offline"), ("run", "online")],
)
def test_wandb_mode_variable_wins(clean_env, monkeypatch, value, expected):
    _write_netrc(clean_env)  # configured, yet the variable decides
    monkeypatch.setenv("WANDB_MODE", value)
    assert wandb_mode() == expected


def test_wandb_disabled_variable(clean_env, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setenv("WANDB_DISABLED", "true")
    assert wandb_mode() == "disabled"


def test_unknown_mode_warns_and_uses_the_rule(clean_env, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "sometimes")
    with pytest.warns(UserWarning, match="WANDB_MODE"):
        assert wandb_mode() == "offline"


# --------------------------------------------------------------------------------- run control
def test_start_run_offline_leaves_environment_as_found(clean_env, tmp_path):
    before = _env_snapshot()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning on the normal path
        assert start_run("gba-test", "r1", {"a": 1}, dir=str(tmp_path))
    assert wandb.run is not None and wandb.run.settings.mode == "offline"
    assert dict(wandb.run.config) == {"a": 1}
    wandb.log({"x": 1.0})
    finish_run()
    assert wandb.run is None
    assert _env_snapshot() == before
    assert list(tmp_path.glob("wandb/offline-run-*"))


def test_start_run_passes_mode_and_init_timeout(clean_env, monkeypatch):
    seen = {}

    def fake_init(**kwargs):
        seen.update(kwargs)
        return object()

    monkeypatch.setattr(wandb, "init", fake_init)
    start_run("p", init_timeout=3)
    assert seen["mode"] == "offline" and seen["settings"].init_timeout == 3
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "7")
    start_run("p")
    assert seen["settings"].init_timeout == 7
    start_run("p", settings=wandb.Settings(init_timeout=2))  # the caller's own setting is kept
    assert seen["settings"].init_timeout == 2
    start_run("p", settings={"init_timeout": 4})
    assert seen["settings"].init_timeout == 4
    monkeypatch.delenv("WANDB_INIT_TIMEOUT")
    start_run("p")
    assert seen["settings"].init_timeout == wandb_run.DEFAULT_INIT_TIMEOUT
    start_run("p", mode="disabled")  # an explicit mode= skips wandb entirely
    assert "WANDB_MODE" not in os.environ


def test_disabled_and_no_project_never_touch_wandb(clean_env, monkeypatch):
    def must_not_run(**kwargs):
        raise AssertionError("wandb.init called")

    monkeypatch.setattr(wandb, "init", must_not_run)
    assert start_run(None) is False
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert start_run("p") is False


def test_failed_online_start_falls_back_offline_with_one_warning(clean_env, tmp_path, online_wandb_fails):
    modes = online_wandb_fails
    before = _env_snapshot()
    with pytest.warns(UserWarning, match="logging offline instead") as record:
        assert start_run("gba-test", dir=str(tmp_path))
    assert len(record) == 1
    assert modes == ["online", "offline"]
    assert wandb.run is not None and wandb.run.settings.mode == "offline"
    finish_run()
    assert _env_snapshot() == before


def test_broken_wandb_warns_once_and_returns_false(clean_env, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("no disk")

    monkeypatch.setattr(wandb, "init", broken)
    with pytest.warns(UserWarning, match="could not start W&B") as record:
        assert start_run("p") is False
    assert len(record) == 1


def test_unreachable_server_continues_offline(clean_env, tmp_path, monkeypatch):
    """A server that accepts connections but never answers: init gives up after init_timeout."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{server.getsockname()[1]}")
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setenv("WANDB_ERROR_REPORTING", "false")  # no telemetry to the dead server at exit
    assert wandb_mode() == "online"
    try:
        with pytest.warns(UserWarning, match="logging offline instead"):
            assert start_run("gba-test", dir=str(tmp_path), init_timeout=1)
        assert wandb.run.settings.mode == "offline"
        wandb.log({"x": 1.0})
        finish_run()
    finally:
        server.close()


# ----------------------------------------------------------------------------------- the guard
def test_guard_warns_once_and_work_continues():
    guard = WandbGuard("W&B logging")
    calls = []

    def flaky(x):
        calls.append(x)
        raise RuntimeError("disk full")

    done = []
    with pytest.warns(UserWarning, match="W&B logging failed") as record:
        for step in range(5):
            guard.call("log", flaky, step)
            done.append(step)  # the caller's work goes on
    assert len(record) == 1
    assert done == [0, 1, 2, 3, 4]
    assert calls == [0]  # skipped once failed
    assert not guard.enabled and guard.errors == ["log: RuntimeError('disk full')"]


def test_guard_catch_and_wrap():
    guard = WandbGuard("tracker")
    assert guard.call("ok", lambda: 3) == 3

    @guard.wrap("decorated")
    def boom():
        raise ValueError("bad")

    with pytest.warns(UserWarning, match="tracker failed") as record:
        assert boom() is None
        with guard.catch("block"):
            raise OSError("also bad")
    assert len(record) == 1
    assert [e.split(":")[0] for e in guard.errors] == ["decorated", "block"]
