"""The settings object: every field from its SNOOPWATCH_* variable, and nonsense refused."""

from __future__ import annotations

import pytest

from detectors.settings import Settings, describe


@pytest.mark.parametrize(("env", "value"), [
    ("ALERT_THRESHOLD", "0"),  # every actor would alert, with no reason at all
    ("ALERT_THRESHOLD", "101"),  # no risk (0-100) would ever reach it
    ("CLOSE_RATIO", "0"),  # an episode would never close
    ("CLOSE_RATIO", "1.5"),
    ("ADAPTIVE_QUANTILE", "1"),
    ("DECAY_HALF_LIFE_S", "0"),
    ("LONG_HALF_LIFE_S", "-1"),
    ("PARTITIONS", "0"),
    ("WEB_PORT", "70000"),
    ("LOG_LEVEL", "loud"),
    ("CHECKPOINT_INTERVAL_S", "0"),
    ("MAX_TRACKED_CUSTOMERS", "-5"),  # any other number: never negative
    ("ACTOR_TTL_S", "nan"),
    ("TRANSACTION_TIMEOUT_S", "0.5"),  # below the broker's 1 s minimum
    ("TRANSACTION_TIMEOUT_S", "901"),  # above its transaction.max.timeout.ms (15 min)
    ("WORKER_ID", " w1"),  # a stray space would give a restart another transactional id
])
def test_out_of_range_values_are_refused_naming_the_variable(env: str, value: str) -> None:
    with pytest.raises(ValueError, match=f"SNOOPWATCH_{env}="):
        Settings.from_env({f"SNOOPWATCH_{env}": value})


def test_defaults_and_edge_values_are_accepted() -> None:
    Settings()
    Settings.from_env({"SNOOPWATCH_ALERT_THRESHOLD": "100", "SNOOPWATCH_ACTOR_TTL_S": "0",
                       "SNOOPWATCH_HOT_ACTORS": "0", "SNOOPWATCH_SEED": "-3",
                       "SNOOPWATCH_LOG_LEVEL": "WARNING", "SNOOPWATCH_WORKER_ID": "pod-0",
                       "SNOOPWATCH_TRANSACTION_TIMEOUT_S": "900"})


def test_every_field_has_a_variable_and_a_docstring() -> None:
    rows = describe()
    assert {env for env, _, _ in rows} >= {"SNOOPWATCH_BROKER", "SNOOPWATCH_ALERTMANAGER_URL"}
    assert all(env.startswith("SNOOPWATCH_") and doc for env, _, doc in rows)
    url = "http://127.0.0.1:9093"
    assert Settings.from_env({"SNOOPWATCH_ALERTMANAGER_URL": url}).alertmanager_url == url
