from __future__ import annotations

from pathlib import Path

import pytest

from config import SHIPPED, ConfigError, build_config, load_config


def load(text: str, tmp_path: Path, env: dict[str, str] | None = None):
    p = tmp_path / "f.toml"
    p.write_text(text)
    return load_config(p, env=env or {})


def test_shipped_config_is_valid() -> None:
    cfg = load_config(SHIPPED, env={})
    echo = cfg.pool("echo")
    assert echo.handler == "workers.examples:echo"
    assert (echo.size, echo.concurrency, echo.max_deliver) == (2, 8, 5)
    assert echo.backoff == (0.2, 1.0, 5.0)
    assert echo.quota.max_rss_mb == 256 and echo.quota.rate_per_s == 0
    assert cfg.nats.embedded and cfg.metrics.port == 9464


def test_env_overrides_nested_keys_with_toml_values(tmp_path: Path) -> None:
    cfg = load(
        '[pools.Echo]\nhandler = "m:f"\n',
        tmp_path,
        env={
            "FOUNDATION_NATS__URL": "nats://10.0.0.5:4222",
            "FOUNDATION_POOLS__ECHO__SIZE": "4",
            "FOUNDATION_POOLS__ECHO__BACKOFF": "[0.5, 2]",
            "FOUNDATION_POOLS__ECHO__QUOTA__MAX_RSS_MB": "128",
            "UNRELATED": "x",
        },
    )
    assert cfg.nats.url == "nats://10.0.0.5:4222" and not cfg.nats.embedded
    assert cfg.pool("Echo").size == 4
    assert cfg.pool("Echo").backoff == (0.5, 2.0)
    assert cfg.pool("Echo").quota.max_rss_mb == 128.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[pools.e]\nhandler = "m:f"\nsise = 2\n', "pools.e.sise: unknown key; did you mean 'size'?"),
        ('[pools.e]\nhandler = "m:f"\nsize = "two"\n', "pools.e.size: must be an integer, got str 'two'"),
        ('[pools.e]\nhandler = "m:f"\nsize = 0\n', "pools.e.size: must be > 0, got 0"),
        ('[pools.e]\nhandler = "nocolon"\n', "pools.e.handler: must be 'module:callable', got 'nocolon'"),
        ("[pools.e]\nsize = 1\n", "pools.e.handler: is required"),
        ('[pools.e]\nhandler = "m:f"\nbackoff = [1, -1]\n', r"pools.e.backoff\[1\]: must be > 0, got -1.0"),
        ('[pools.e]\nhandler = "m:f"\nmax_deliver = 2\n', "pools.e.backoff: has 3 delays but max_deliver is 2"),
        ('[pools.e]\nhandler = "m:f"\nrestart = "sometimes"\n', "pools.e.restart: must be one of permanent, transient, temporary"),
        ('[pools.e]\nhandler = "m:f"\n[pools.e.quota]\nmax_rss_mb = -5\n', "pools.e.quota.max_rss_mb: must be >= 0, got -5.0"),
        ('[pools."a.b"]\nhandler = "m:f"\n', r"pools.a.b: a pool name must match"),
        ('[nats]\nurl = "http://x"\n', "nats.url: must start with nats://"),
        ("[natz]\n", "natz: unknown key; did you mean 'nats'?"),
        ("[metrics]\nport = 70000\n", "metrics.port: must be 0..65535"),
        ("[metrics]\nsample_interval = 0\n", "metrics.sample_interval: must be > 0"),
        ('[nats]\nmonitor_urls = ["localhost:8222"]\n', r"nats.monitor_urls\[0\]: must start with http://"),
        ("[supervisor]\nmax_restarts = true\n", "supervisor.max_restarts: must be an integer, got bool True"),
        ("not toml = = 1", "is not valid TOML"),
    ],
)
def test_bad_config_names_the_key_and_why(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(text, tmp_path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", env={})


def test_backoff_for_repeats_the_last_delay() -> None:
    pool = build_config({"pools": {"p": {"handler": "m:f", "backoff": [0.1, 0.5], "max_deliver": 9}}}).pool("p")
    assert [pool.backoff_for(a) for a in (1, 2, 3, 8)] == [0.1, 0.5, 0.5, 0.5]


def test_unknown_pool_lists_known_ones() -> None:
    cfg = build_config({"pools": {"a": {"handler": "m:f"}}})
    with pytest.raises(ConfigError, match="pools.b: no such pool; known pools: a"):
        cfg.pool("b")
