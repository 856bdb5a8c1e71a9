"""The suite's fixtures: the settings, each probe's measurement (run once per session, an `Attempt` whose
`value()` fails the check that asks for it when the probe could not measure), and `check`, where a test
records the criterion it judged for the evidence. Registered by the plugin when the suite runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterator

import pytest

from deploy_tool.probes import (
    Attempt,
    NO_API_KEY,
    measure_account,
    measure_backtest,
    measure_min_order,
    measure_observation,
    measure_risk_config,
    measure_secrets,
    measure_status,
    measure_time,
    measure_trades,
)
from preflight_tests.plugin import CRITERION_KEY, RunState, state_of

if TYPE_CHECKING:
    # Names for the annotations only. A probe module is loaded by the `measure_*` function of the check that
    # needs it, when that check runs (and loads requests, psycopg2 or detect-secrets when it measures): not
    # at startup or collection, not for a check that is skipped or not collected.
    from deploy_tool.criteria import Criterion
    from deploy_tool.probes.admin import AdminClient
    from deploy_tool.probes.backtest import Summary
    from deploy_tool.probes.freshness import Freshness
    from deploy_tool.probes.observe import Observation
    from deploy_tool.probes.okx import MinOrder, StatusProbe, TimeProbe
    from deploy_tool.probes.okxaccount import Account
    from deploy_tool.probes.riskconfig import RiskConfig
    from deploy_tool.probes.secretscan import Scan
    from deploy_tool.redact import Redactor
    from deploy_tool.settings import Settings


def summary_attempt(state: RunState) -> Attempt[Summary]:
    """The backtest summary, read once per run: parametrization and the checks judge the same bytes."""
    if state.summary_attempt is None:
        state.summary_attempt = measure_backtest(state.settings, state.redactor)
    return state.summary_attempt


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One backtest check per strategy in the summary file; one minimum-order check per --inst-id."""
    if "inst_id" in metafunc.fixturenames:
        state = state_of(metafunc.config)
        ids = [i.strip() for i in (state.settings.inst_id or "").split(",") if i.strip()] if state else []
        metafunc.parametrize("inst_id", ids or [None], ids=ids or ["none"])
    if "strategy" not in metafunc.fixturenames:
        return
    state = state_of(metafunc.config)
    if state is None:
        return
    attempt = summary_attempt(state)
    if attempt.error is not None:
        metafunc.parametrize("strategy", [None], ids=["summary"])
        return
    strategies = attempt.value().strategies
    metafunc.parametrize("strategy", list(strategies), ids=[s.name for s in strategies])


@pytest.fixture
def check(request: pytest.FixtureRequest) -> Callable[[Criterion], Criterion]:
    """Records the criterion a check judged (measured, threshold, unit, message) for the evidence."""

    def record(criterion: Criterion) -> Criterion:
        request.node.stash[CRITERION_KEY] = criterion
        return criterion

    return record


@pytest.fixture(scope="session")
def run_state(pytestconfig: pytest.Config) -> RunState:
    state = state_of(pytestconfig)
    if state is None:
        pytest.fail("the gradual-deploy plugin is not active for this run", pytrace=False)
    return state


@pytest.fixture(scope="session")
def settings(run_state: RunState) -> Settings:
    """The resolved settings of this run."""
    return run_state.settings


@pytest.fixture(scope="session")
def redactor(run_state: RunState) -> Redactor:
    return run_state.redactor


@pytest.fixture(scope="session")
def okx_time(settings: Settings, redactor: Redactor) -> Attempt[TimeProbe]:
    """N timed calls of the exchange's public time endpoint."""
    return measure_time(settings, redactor)


@pytest.fixture(scope="session")
def okx_status(settings: Settings, redactor: Redactor) -> Attempt[StatusProbe]:
    """The exchange's maintenance calendar."""
    return measure_status(settings, redactor)


@pytest.fixture(scope="session")
def trades_freshness(settings: Settings, redactor: Redactor) -> Attempt[Freshness]:
    """Age of the newest trade in the trades table."""
    return measure_trades(settings, redactor)


@pytest.fixture(scope="session")
def backtest_summary(run_state: RunState) -> Attempt[Summary]:
    """The parsed backtest summary file."""
    return summary_attempt(run_state)


@pytest.fixture(scope="session")
def observation(settings: Settings, redactor: Redactor) -> Attempt[Observation]:
    """The last --observe-window of the trading system's audit and risk events."""
    return measure_observation(settings, redactor)


@pytest.fixture(scope="session")
def risk_config(run_state: RunState, settings: Settings, redactor: Redactor) -> Attempt[RiskConfig]:
    """The trading system's risk configuration (--risk-config, else GET /config); its digest binds the evidence."""
    run_state.risk_attempt = measure_risk_config(settings, redactor)
    return run_state.risk_attempt


@pytest.fixture(scope="session")
def account_attempt(settings: Settings, redactor: Redactor) -> Attempt[Account] | None:
    """The account behind the exchange API key, read once; None without a key."""
    return measure_account(settings, redactor)


@pytest.fixture(scope="session")
def okx_account(settings: Settings, account_attempt: Attempt[Account] | None) -> Attempt[Account]:
    """The account; the account checks skip without an API key, or fail with --require-account-check."""
    if account_attempt is None:
        names = ", ".join((settings.okx_api_key_env, settings.okx_api_secret_env, settings.okx_api_passphrase_env))
        reason = NO_API_KEY.format(names=names)
        if settings.require_account_check:
            pytest.fail(f"{reason} (--require-account-check)", pytrace=False)
        pytest.skip(f"{reason}; set them, or pass --require-account-check to make this a failure")
    return account_attempt


@pytest.fixture(scope="session")
def equity(settings: Settings, account_attempt: Attempt[Account] | None) -> float | None:
    """The account's total equity for the minimum-order check, when --capital is unset and a key can read it."""
    if settings.capital is not None or account_attempt is None or account_attempt.error is not None:
        return None
    return account_attempt.value().total_eq


@pytest.fixture
def min_order(settings: Settings, redactor: Redactor, inst_id: str) -> Attempt[MinOrder]:
    """The exchange's minimum order for the instrument."""
    return measure_min_order(settings, inst_id, redactor)


@pytest.fixture(scope="session")
def secret_scan(settings: Settings, redactor: Redactor) -> Attempt[Scan]:
    """The scan of --scan-path; the secrets check skips, with the reason, without one."""
    if not settings.scan_path:
        pytest.skip("no --scan-path: set it to the trading system's source to check that no key is hard-coded")
    return measure_secrets(settings, redactor)


@pytest.fixture(scope="session")
def admin(settings: Settings) -> Iterator[AdminClient]:
    """A client of the trading system's admin API; the admin checks skip, with the reason, without one."""
    if not settings.http_admin_url:
        pytest.skip("admin API not configured: set --http-admin-url (or EXEC_HTTP_ADMIN_URL) to check it")
    from deploy_tool.probes.admin import AdminClient

    with AdminClient(settings.http_admin_url, token=settings.admin_token()) as client:
        yield client


@pytest.fixture(scope="session")
def control_file(settings: Settings) -> str:
    """The control file's path; the control checks skip, with the reason, without one."""
    if not settings.control_file:
        pytest.skip("control file not configured: set --control-file (or EXEC_CONTROL_FILE) to check it")
    return settings.control_file
