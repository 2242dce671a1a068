"""The OpenMP wait policy: which variables each choice sets, and that the user's own wins."""

from __future__ import annotations

import pytest

from assistant.config import parse_config
from assistant.omp import apply_thread_wait, thread_wait_environment


@pytest.fixture()
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    return monkeypatch


def test_each_policy_sets_its_variable_and_the_default_spins_briefly(clean_env: pytest.MonkeyPatch) -> None:
    import os

    assert parse_config({}).model.thread_wait == "brief"
    apply_thread_wait("brief")
    assert os.environ["GOMP_SPINCOUNT"] == "1000" and "OMP_WAIT_POLICY" not in os.environ
    assert thread_wait_environment("passive") == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert thread_wait_environment("active") == {"OMP_WAIT_POLICY": "ACTIVE"}
    with pytest.raises(ValueError, match="unknown thread wait policy"):
        thread_wait_environment("sometimes")


@pytest.mark.parametrize("variable, value", [("OMP_WAIT_POLICY", "ACTIVE"), ("GOMP_SPINCOUNT", "0")])
def test_a_policy_already_in_the_environment_wins(clean_env: pytest.MonkeyPatch, variable: str, value: str) -> None:
    import os

    clean_env.setenv(variable, value)
    apply_thread_wait("passive")
    apply_thread_wait("brief")
    assert os.environ[variable] == value
    assert {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} - {variable} & set(os.environ) == set()


def test_a_bad_policy_in_the_config_is_refused() -> None:
    from assistant.errors import ConfigError

    with pytest.raises(ConfigError, match="thread_wait"):
        parse_config({"model": {"thread_wait": "sometimes"}})
