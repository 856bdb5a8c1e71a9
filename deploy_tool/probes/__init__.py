"""The probes: what the gate and `watch` measure, each in its own module (`okx`, `freshness`,
`backtest`, `admin`, `observe`). The `measure_*` functions run one probe from the settings and return
an `Attempt`: its value, or the reason it could not measure. The probe modules are imported only when
measured, so that `gradual-deploy pause` never pays for requests or psycopg2.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Generic, Mapping, TypeVar

from deploy_tool import ProbeError

if TYPE_CHECKING:
    from deploy_tool.probes.backtest import Strategy, Summary
    from deploy_tool.probes.freshness import Freshness
    from deploy_tool.probes.observe import Observation
    from deploy_tool.probes.okx import MinOrder, StatusProbe, TimeProbe
    from deploy_tool.probes.okxaccount import Account
    from deploy_tool.probes.riskconfig import RiskConfig
    from deploy_tool.probes.secretscan import Scan
    from deploy_tool.redact import Redactor
    from deploy_tool.settings import Settings

T = TypeVar("T")


class Attempt(Generic[T]):
    """A probe run once: its value, or the reason it could not measure."""

    def __init__(self, measure: Callable[[], T], redactor: Redactor | None = None) -> None:
        self._value: T | None = None
        self.error: str | None = None
        try:
            self._value = measure()
        except ProbeError as exc:
            self.error = str(exc)
        except Exception as exc:  # a probe bug must fail the check, never pass or skip it
            self.error = (f"probe crashed: {type(exc).__name__}: {exc} (a fault of the probe, not of what it "
                          "measures: report it with this line)")
        if self.error is not None and redactor is not None:
            self.error = redactor.scrub(self.error)

    def value(self) -> T:
        """The measurement; ProbeError with the reason when there is none."""
        if self.error is not None:
            raise ProbeError(self.error)
        return self._value  # type: ignore[return-value]


NO_DATABASE = ("no trades database configured: set --database-url (or DATABASE_URL, or database_url in "
               "pytest.ini), or pass --skip-db-check to go without this check (a run that skips it cannot open real)")


def measure_time(settings: Settings, redactor: Redactor | None = None) -> Attempt[TimeProbe]:
    """N timed calls of the exchange's public time endpoint."""
    from deploy_tool.probes.okx import probe_public_time

    return Attempt(lambda: probe_public_time(settings.okx_base_url, settings.api_samples), redactor)


def measure_status(settings: Settings, redactor: Redactor | None = None) -> Attempt[StatusProbe]:
    """The exchange's maintenance calendar."""
    from deploy_tool.probes.okx import probe_system_status

    return Attempt(lambda: probe_system_status(settings.okx_base_url, settings.maintenance_horizon), redactor)


def measure_trades(settings: Settings, redactor: Redactor | None = None) -> Attempt[Freshness]:
    """Age of the newest trade in the trades table, or the reason there is none (no database configured)."""
    from deploy_tool.probes.freshness import probe_trades_freshness

    database_url = settings.database_url

    def measure() -> Freshness:
        if not database_url:
            raise ProbeError(NO_DATABASE)
        return probe_trades_freshness(database_url, settings.trades_table, settings.trades_time_column,
                                      statement_timeout_s=settings.db_statement_timeout_ms / 1000)

    return Attempt(measure, redactor)


def measure_backtest(settings: Settings, redactor: Redactor | None = None) -> Attempt[Summary]:
    """The parsed backtest summary file."""
    from deploy_tool.probes.backtest import load_summary

    return Attempt(lambda: load_summary(settings.backtest_summary, settings.strategy), redactor)


def measure_observation(settings: Settings, redactor: Redactor | None = None) -> Attempt[Observation]:
    """The last --observe-window of the trading system's audit and risk events."""
    from deploy_tool.probes.observe import FillFields, observe

    fields = FillFields(settings.audit_price_field, settings.audit_fill_price_field, settings.audit_pnl_field,
                        settings.audit_size_field)
    return Attempt(lambda: observe(
        settings.audit_dir, settings.risk_events_csv, settings.observe_window, ts_field=settings.audit_ts_field,
        event_field=settings.audit_event_field, status_field=settings.audit_status_field,
        risk_ts_column=settings.risk_events_ts_column, future_tolerance_s=settings.max_clock_skew_ms / 1000,
        fields=fields, recent_s=settings.interval), redactor)


def measure_baseline(settings: Settings, redactor: Redactor | None = None) -> Attempt[Strategy]:
    """The strategy whose backtest trades the judge compares the live trades with (--judge-backtest,
    --judge-strategy)."""
    from deploy_tool.probes.backtest import load_summary

    def measure() -> Strategy:
        assert settings.judge_backtest is not None
        summary = load_summary(settings.judge_backtest, settings.judge_strategy)
        if len(summary.strategies) > 1:
            raise ProbeError(f"--judge-backtest {summary.path} holds {len(summary.strategies)} strategies ("
                             + ", ".join(s.name for s in summary.strategies) + "): name the one trading with "
                             "--judge-strategy")
        strategy = summary.strategies[0]
        if strategy.error:
            raise ProbeError(f"--judge-backtest {summary.path}: {strategy.error}: fix that file, or point "
                             "--judge-backtest at the backtest of the strategy trading")
        return strategy

    return Attempt(measure, redactor)


def measure_risk_config(settings: Settings, redactor: Redactor | None = None) -> Attempt[RiskConfig]:
    """The trading system's risk configuration: --risk-config if given, else GET /config of the admin API."""
    from deploy_tool.probes.riskconfig import parse_config, read_file

    def measure() -> RiskConfig:
        if settings.risk_config:
            return read_file(settings.risk_config, settings.risk_config_section)
        if settings.http_admin_url:
            from deploy_tool.probes.admin import AdminClient

            import dataclasses

            from deploy_tool.probes.riskconfig import served_config_digest

            with AdminClient(settings.http_admin_url, token=settings.admin_token()) as client:
                body = client.get_config()
                return dataclasses.replace(parse_config(body, f"GET {client.shown_url}/config",
                                                        settings.risk_config_section),
                                           sha256=served_config_digest(body, settings.risk_config_section))
        raise ProbeError("no risk configuration: set --http-admin-url (the system serves GET /config) or "
                         "--risk-config (its JSON, YAML or .env file), or pass --skip-risk-check (a run that skips "
                         "it cannot open real)")

    return Attempt(measure, redactor)


def measure_min_order(settings: Settings, inst_id: str, redactor: Redactor | None = None) -> Attempt[MinOrder]:
    """The exchange's minimum order for one instrument, in the quote currency."""
    from deploy_tool.probes.okx import probe_min_order

    return Attempt(lambda: probe_min_order(settings.okx_base_url, inst_id), redactor)


NO_API_KEY = "no exchange API key set ({names}): the account checks need a read-only key to check"


def measure_account(settings: Settings, redactor: Redactor | None = None,
                    environ: Mapping[str, str] | None = None) -> Attempt[Account] | None:
    """The account behind the API key; None when no key is set at all (the checks skip, or fail when
    --require-account-check)."""
    import os

    from deploy_tool.probes.okxaccount import Credentials, probe_account

    environ = os.environ if environ is None else environ
    names = (settings.okx_api_key_env, settings.okx_api_secret_env, settings.okx_api_passphrase_env)
    try:
        creds = Credentials.from_environ(environ, *names)
    except ProbeError as exc:
        error = str(exc)
        return Attempt(lambda: _raise(error), redactor)
    if creds is None:
        return None
    if redactor is not None:
        for secret in (creds.key, creds.secret, creds.passphrase):
            redactor.add(secret)
    found = creds
    return Attempt(lambda: probe_account(settings.okx_base_url, found, settings.okx_demo), redactor)


def _raise(error: str) -> Any:
    raise ProbeError(error)


def measure_secrets(settings: Settings, redactor: Redactor | None = None) -> Attempt[Scan]:
    """Hard-coded secrets under --scan-path."""
    from deploy_tool.probes.secretscan import scan

    path = settings.scan_path
    assert path is not None
    return Attempt(lambda: scan(path), redactor)
