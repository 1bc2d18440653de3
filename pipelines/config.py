"""The one settings object, read from the environment (`GATEHOUSE_*`) and an optional `.env`."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    AliasChoices,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from pipelines.addresses import address_list
from pipelines.errors import GatehouseError


class ConfigurationError(GatehouseError):
    pass


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GATEHOUSE_", env_file=".env", extra="ignore")

    database_url: str = Field(
        "sqlite:///gatehouse.db", description="SQLAlchemy URL; PostgreSQL via postgresql://…"
    )
    pipelines: str = Field(
        "",
        description="The pipeline modules to import, comma-separated import paths (a package: all "
        "its modules); none by default. pipelines.catalog is the examples",
    )
    groups: dict[str, list[str]] = Field(
        default_factory=dict,
        description='Approver groups, JSON: {"finance-leads": ["U123"]}; resolved with the '
        "workspace's Slack user groups as their union, in Slack and the CLI alike",
    )
    run_lease_seconds: float = Field(300.0, gt=0, description="How long a worker's claim lasts")
    worker_poll_seconds: float = Field(0.5, gt=0, description="Idle worker's polling interval")
    llm_model: str | None = Field(
        None, description="Model name for ctx.llm; unset → LLM steps go to a human"
    )
    llm_base_url: str | None = Field(
        None, description="OpenAI-compatible server, e.g. http://localhost:11434/v1"
    )
    llm_api_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("GATEHOUSE_LLM_API_KEY", "OPENAI_API_KEY"),
        description="API key (falls back to OPENAI_API_KEY)",
    )
    llm_timeout_seconds: float = Field(
        60.0, gt=0, description="Per request, before the SDK retries"
    )
    llm_max_retries: int = Field(2, ge=0, description="The SDK's retries for 429, 5xx and timeouts")
    llm_output_mode: Literal["json_schema", "json_object"] = Field(
        "json_schema",
        description="Structured outputs, or JSON mode + validation for servers without them",
    )
    llm_prices: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description='USD per million tokens, JSON: {"my-model": {"prompt": 0.5, "completion": 1.5}}',
    )
    slack_bot_token: SecretStr | None = Field(
        None, validation_alias="SLACK_BOT_TOKEN", description="xoxb-… token for the Web API"
    )
    slack_signing_secret: SecretStr | None = Field(
        None, validation_alias="SLACK_SIGNING_SECRET", description="Verifies requests in HTTP mode"
    )
    slack_app_token: SecretStr | None = Field(
        None, validation_alias="SLACK_APP_TOKEN", description="xapp-… token: Socket Mode when set"
    )
    slack_api_url: str | None = Field(
        None,
        validation_alias="SLACK_API_URL",
        description="Web API base URL override (sandbox, tests)",
    )
    http_host: str = Field(
        "127.0.0.1", description="HTTP mode: the address `gatehouse serve` binds"
    )
    http_port: int = Field(3000, ge=0, le=65535, description="HTTP mode: the port")
    http_max_body_bytes: int = Field(
        1_000_000, gt=0, description="Largest request body on any HTTP route (413 above)"
    )
    http_rate_limit: float = Field(
        50.0, ge=0, description="Requests per second per client address (429 above); 0: off"
    )
    http_rate_burst: int = Field(
        200, ge=1, description="Requests a client address may send at once before the rate applies"
    )
    slack_max_body_bytes: int = Field(
        262_144,
        gt=0,
        description="Largest body `/slack/events` reads before its signature (413 above)",
    )
    trusted_proxies: Annotated[list[str], NoDecode, BeforeValidator(address_list)] = Field(
        default_factory=list,
        description="Proxies whose X-Forwarded-For is believed, JSON or comma list; none by default",
    )
    approvals_channel: str | None = Field(None, description="Channel id or name for approval cards")
    review_channel: str | None = Field(None, description="Channel for the weekly review")
    alerts_channel: str | None = Field(None, description="Channel for alerts (error rate, drift)")
    slash_command: str = Field("/gatehouse", description="The slash command's name")
    sandbox_host: str = Field(
        "127.0.0.1",
        description="Without SLACK_BOT_TOKEN, `gatehouse serve` runs the local Slack sandbox here",
    )
    sandbox_port: int = Field(8765, ge=0, le=65535, description="The local Slack sandbox's port")
    # None is "not set", which `gatehouse serve` against a real Slack refuses; `"*"` written
    # out is anyone, as a decision. Elsewhere (code, the CLI, the sandbox) unset is anyone.
    triggerers: dict[str, list[str]] | None = Field(
        None,
        description='Who may `/gatehouse trigger`, JSON by pipeline or "*": {"*": ["@ops"]}; '
        '{"*": ["*"]}: anyone. Required by `gatehouse serve` against a real Slack',
    )
    operators: list[str] | None = Field(
        None,
        description="Who may undo (besides the tool's approvers), replay, export and run evals "
        'from Slack, JSON: ["@ops", "U123"]; ["*"]: anyone. Required by `gatehouse serve` '
        "against a real Slack",
    )
    slack_team_ids: list[str] | None = Field(
        None,
        description="The Slack workspaces (team ids, or enterprise ids for a Grid org) whose "
        'requests are served, JSON: ["T012AB3C4", "E0123ABCD"]; others are refused. Unset: the '
        "bot's own workspace (auth.test) under `gatehouse serve`, the sandbox's in the sandbox",
    )
    serve_workers: int = Field(2, ge=0, le=64, description="Worker threads in `gatehouse serve`")
    timezone: str = Field("UTC", description="IANA zone for cron schedules and the weekly review")
    misfire_grace_seconds: float = Field(
        300.0,
        ge=0,
        description="A fire missed by less than this runs once late; older ones are skipped",
    )
    webhook_secrets: dict[str, str] = Field(
        default_factory=dict,
        description='HMAC-SHA256 secret per pipeline for POST /hooks/PIPELINE, JSON: {"p": "s3cret"}',
    )
    webhook_tokens: dict[str, str] = Field(
        default_factory=dict,
        description="Bearer token per pipeline (instead of an HMAC secret), JSON",
    )
    secret_key: SecretStr | None = Field(
        None,
        description="Fernet key(s), comma-separated (the first seals), for sensitive fields at rest; "
        "unset: a key file beside a SQLite database, refused on PostgreSQL",
    )
    webhook_max_bytes: int = Field(
        262_144, gt=0, description="Largest webhook body accepted (413 above)"
    )
    metrics_token: SecretStr | None = Field(
        None,
        description="Bearer token GET /metrics asks for (401 without it); unset: /metrics is open",
    )
    audit_key: SecretStr | None = Field(
        None,
        description="Keys the audit log's hash chain (HMAC-SHA256): entries written with it "
        "cannot be recomputed with database access alone; `gatehouse audit verify` needs it",
    )
    review_cron: str = Field(
        "0 9 * * MON", description="When the weekly review is posted (cron, GATEHOUSE_TIMEZONE)"
    )
    review_size: int = Field(20, ge=1, le=100, description="Runs picked for the weekly review")
    review_stratify: bool = Field(False, description="Pick review runs evenly across pipelines")
    eval_datasets_dir: str | None = Field(
        None,
        description="Where `gatehouse eval PIPELINE` and `/gatehouse eval` find PIPELINE.jsonl "
        "when no --dataset is given (then the example sets in pipelines/catalog/datasets/)",
    )
    alert_window_minutes: float = Field(15.0, gt=0, description="Error-rate window for alerts")
    alert_baseline_hours: float = Field(
        24.0, gt=0, description="The baseline the window is compared with"
    )
    alert_threshold: float = Field(
        0.2, ge=0, le=1, description="Alert at or above this error rate…"
    )
    alert_factor: float = Field(
        3.0, ge=1, description="…and at least this many times the baseline…"
    )
    alert_min_volume: int = Field(
        10, ge=1, description="…with at least this many finished runs in the window"
    )
    alert_overrides: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description='Per-pipeline thresholds, JSON: {"p": {"threshold": 0.5, "factor": 2, "min_volume": 5}}',
    )
    alert_human_exit_factor: float = Field(
        2.0,
        ge=1,
        description="Alert when an LLM call's human-exit rate is this many times its baseline…",
    )
    alert_human_exit_min_rate: float = Field(
        0.1, ge=0, le=1, description="…and at least this rate…"
    )
    alert_human_exit_min_volume: int = Field(
        20, ge=1, description="…over at least this many LLM calls in the window"
    )
    alert_confidence_drop: float = Field(
        0.15,
        ge=0,
        le=1,
        description="Alert when the mean confidence falls more than this under its baseline…",
    )
    alert_confidence_min_volume: int = Field(
        20, ge=1, description="…over at least this many answers with a confidence in the window"
    )
    alert_drift_psi: float = Field(
        0.2, gt=0, description="Drift alert when a categorical field's PSI is above this…"
    )
    alert_drift_min_volume: int = Field(
        50, ge=1, description="…with at least this many values in each period"
    )
    alert_drift_recent_days: float = Field(
        7.0, gt=0, description="Drift: the recent period compared…"
    )
    alert_drift_reference_days: float = Field(
        28.0, gt=0, description="…with this many days before it"
    )
    log_format: Literal["console", "json"] = "console"
    log_level: Literal["debug", "info", "warning", "error"] = "warning"
    log_redact_keys: list[str] = Field(
        default_factory=list,
        description='More log keys whose values are redacted (PII), JSON: ["email", "phone"]',
    )
    # budgets
    budgets: dict[str, dict[str, float | str]] = Field(
        default_factory=dict,
        description="Per-pipeline budgets over the @pipeline ones, JSON: "
        '{"triage": {"max_cost_per_day": 5, "max_cost_per_run": 0.5, "max_runs_per_hour": 60, '
        '"on_budget": "fail"}} (USD; a day is a UTC day); unknown pipelines or keys stop start-up',
    )
    # foureyes
    people: dict[str, str] = Field(
        default_factory=dict,
        description='Display names by user id, JSON: {"U123": "alice"}; the CLI names people in '
        "its refusals with them (`alice (U123)`); Slack mentions them by id anyway",
    )
    # loop
    tell_triggerer: bool = Field(
        True,
        description="DM the Slack user who triggered a run when it waits on a person and when "
        "it ends (succeeded, failed, needs attention…)",
    )
    # --- prune ---
    retention_days: int | None = Field(
        None,
        ge=35,
        description="Delete finished runs older than this many days, once a day (as `gatehouse "
        "prune --older-than Nd`, one replica a day); unset: never. 35 or more",
    )
    # --- workers ---
    worker_batch_size: int = Field(
        8,
        ge=1,
        le=256,
        description="Most queued runs a worker claims in one statement when the queue is deep "
        "(1: one at a time)",
    )
    worker_batch_seconds: float = Field(
        0.05,
        gt=0,
        description="A worker claims no more runs at once than it expects to finish in this "
        "time, judged by its recent runs",
    )
    # --- ack ---
    slack_work_limit: int = Field(
        1000,
        ge=1,
        description="Unfinished Slack work items (replies, decisions, cards) past which a new "
        "Slack request is refused as busy: a command told so, an event or a click 503'd",
    )

    @field_validator("llm_prices")
    @classmethod
    def _prices_have_both_sides(
        cls, value: dict[str, dict[str, float]]
    ) -> dict[str, dict[str, float]]:
        for model, price in value.items():
            if set(price) != {"prompt", "completion"}:
                raise ValueError(
                    f"{model}: give exactly 'prompt' and 'completion' (USD per million tokens)"
                )
        return value

    @field_validator("database_url")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @property
    def pipeline_modules(self) -> list[str]:
        return [m.strip() for m in self.pipelines.split(",") if m.strip()]


def load_settings() -> Settings:
    """Read the settings, turning pydantic's report into one line per bad variable."""
    try:
        return Settings()
    except SettingsError as exc:
        # A value that is not even JSON (GATEHOUSE_GROUPS='{oops') fails inside
        # pydantic-settings' environment source, before validation.
        match = re.search(r'field "(\w+)"', str(exc))
        variable = f"GATEHOUSE_{match.group(1).upper()}" if match else "a GATEHOUSE_* variable"
        cause = f" ({exc.__cause__})" if exc.__cause__ else ""
        raise ConfigurationError(f"{variable} is not valid JSON{cause}") from exc
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            # Fields read under Slack's own names (SLACK_BOT_TOKEN) report that name.
            variable = field if field.isupper() else f"GATEHOUSE_{field.upper()}"
            lines.append(f"{variable}: {error['msg']}")
        raise ConfigurationError("; ".join(lines)) from exc
