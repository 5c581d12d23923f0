"""The admin's account configuration as immutable objects (one per amoCRM account).

Field names follow the YAML keys of ``account.example.yaml`` one to one, so a reader can go
from a key in the file to the attribute that holds it. ``config.loader`` builds these from
YAML (with validation that names file, line and path); nothing else reads YAML.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Working periods are stored as (start_minute, end_minute) from local midnight.
Period = tuple[int, int]
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class AuthConfig:
    long_lived_token_env: str | None = None
    encryption_key_env: str | None = None
    client_id: str | None = None
    client_secret_env: str | None = None
    redirect_uri: str | None = None


@dataclass(frozen=True)
class AccountInfo:
    subdomain: str
    id: int
    base_domain: str
    timezone: str
    webhook_secret_env: str
    auth: AuthConfig = field(default_factory=AuthConfig)

    @property
    def base_url(self) -> str:
        return f"https://{self.subdomain}.{self.base_domain}"


@dataclass(frozen=True)
class CalendarConfig:
    # weekday name ("mon"…"sun") -> periods; a missing or empty tuple is a day off
    working_hours: dict[str, tuple[Period, ...]]
    holidays: str | None = None  # country code for the `holidays` package, e.g. "RU"
    shorten_pre_holiday: bool = False
    days_off: tuple[str, ...] = ()  # ISO dates
    working_days: dict[str, tuple[Period, ...]] = field(default_factory=dict)  # ISO date -> periods


@dataclass(frozen=True)
class UsersConfig:
    ignored: tuple[int, ...] = (0,)
    supervisor: int | None = None


@dataclass(frozen=True)
class ComplaintsPipeline:
    id: int
    resolved_statuses: tuple[int, ...] = (142, 143)


@dataclass(frozen=True)
class PipelinesConfig:
    sales: tuple[int, ...]
    complaints: ComplaintsPipeline | None = None


@dataclass(frozen=True)
class ZoneField:
    field_id: int
    enums: dict[str, int]  # zone name (green/yellow/red) -> enum id


@dataclass(frozen=True)
class TaskRule:
    responsible: str  # "responsible" | "supervisor"
    due_business_minutes: int
    text: str


@dataclass(frozen=True)
class FrtFields:
    first_minutes: int | None = None
    last_minutes: int | None = None
    zone: ZoneField | None = None


@dataclass(frozen=True)
class FrtConfig:
    opens_on: tuple[str, ...]
    closes_on: tuple[str, ...]
    also_reacts: tuple[str, ...] = ()
    target_minutes: int = 15
    limit_minutes: int = 60
    fields: FrtFields = field(default_factory=FrtFields)
    breach_task: TaskRule | None = None


@dataclass(frozen=True)
class ComplaintsFields:
    resolution_hours: int | None = None


@dataclass(frozen=True)
class ComplaintsConfig:
    overdue_days: int = 5
    no_complaint_days: int = 30
    business_time: bool = False
    fields: ComplaintsFields = field(default_factory=ComplaintsFields)
    overdue_task: TaskRule | None = None


@dataclass(frozen=True)
class ReferralsConfig:
    field_id: int
    enum_ids: tuple[int, ...] = ()
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class SurveyConfig:
    field_id: int
    scale: tuple[int, int]
    low: tuple[int, int]


@dataclass(frozen=True)
class TalkRateConfig:
    feeds: str = "nps"
    scale: tuple[int, int] = (1, 10)
    map: str = "as_is"  # "as_is" | "linear"


@dataclass(frozen=True)
class SurveyZoneConfig:
    field_id: int
    enums: dict[str, int]
    green_from: float = 9
    yellow_from: float = 7


@dataclass(frozen=True)
class SurveysConfig:
    nps: SurveyConfig | None = None
    csat: SurveyConfig | None = None
    ces: SurveyConfig | None = None
    talk_rate: TalkRateConfig | None = None
    zone: SurveyZoneConfig | None = None
    low_score_task: TaskRule | None = None

    def by_name(self) -> dict[str, SurveyConfig]:
        """The configured surveys keyed by name ("nps", "csat", "ces")."""
        return {n: s for n, s in (("nps", self.nps), ("csat", self.csat), ("ces", self.ces)) if s}


@dataclass(frozen=True)
class WritebackConfig:
    dry_run: bool = False
    batch_size: int = 50
    max_requests_per_second: int = 6
    task_type_id: int = 1


@dataclass(frozen=True)
class SyncConfig:
    events_pull_seconds: int = 60
    events_overlap_minutes: int = 5
    flush_seconds: int = 60
    sweeper_seconds: int = 30


@dataclass(frozen=True)
class AccountConfig:
    """Everything one amoCRM account's YAML configures."""

    account: AccountInfo
    calendar: CalendarConfig | None
    users: UsersConfig
    pipelines: PipelinesConfig
    frt: FrtConfig
    complaints: ComplaintsConfig
    referrals: ReferralsConfig | None
    surveys: SurveysConfig
    writeback: WritebackConfig
    sync: SyncConfig
    source: str = ""  # the file it was loaded from, for messages
    # The YAML as loaded: a sync keeps it, so that after an edit the rules it replaced can be
    # asked which tasks they would have given (jobs/replan.py).
    text: str = field(default="", repr=False, compare=False)

    @property
    def account_id(self) -> int:
        return self.account.id
