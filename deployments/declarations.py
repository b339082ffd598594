"""prefect.yaml, read as typed declarations: the one place deployments are declared.

`prefect deploy --all` reads prefect.yaml itself; `deployments.serve` builds the same deployments from
these declarations, so both paths serve exactly what the file says. Unknown keys are an error here
(Prefect ignores them silently).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Literal

import yaml
from prefect import Flow
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.client.schemas.schedules import CronSchedule
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tools.settings import REPO_ROOT

PREFECT_YAML = REPO_ROOT / "prefect.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Schedule(_Strict):
    cron: str
    timezone: str = "UTC"
    slug: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    active: bool = True

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        CronSchedule(cron=value)  # raises on an invalid cron string
        return value


class Concurrency(_Strict):
    limit: int = Field(ge=1)
    collision_strategy: Literal["ENQUEUE", "CANCEL_NEW"] = "ENQUEUE"


class WorkPool(_Strict):
    name: str
    work_queue_name: str | None = None
    job_variables: dict[str, Any] = Field(default_factory=dict)


class Declaration(_Strict):
    name: str
    entrypoint: str
    description: str | None = None
    tags: list[str] = Field(default_factory=list)
    parameters: dict[str, Any] = Field(default_factory=dict)
    schedules: list[Schedule] = Field(default_factory=list)
    concurrency_limit: Concurrency | None = None
    enforce_parameter_schema: bool = True
    work_pool: WorkPool

    def load_flow(self) -> Flow:
        path, _, attr = self.entrypoint.partition(":")
        module = importlib.import_module(Path(path).with_suffix("").as_posix().replace("/", "."))
        return getattr(module, attr)

    def to_deployment(self):  # noqa: ANN201 - RunnerDeployment
        flow = self.load_flow()
        concurrency = (
            ConcurrencyLimitConfig(
                limit=self.concurrency_limit.limit,
                collision_strategy=ConcurrencyLimitStrategy(self.concurrency_limit.collision_strategy),
            )
            if self.concurrency_limit
            else None
        )
        from prefect.client.schemas.actions import DeploymentScheduleCreate

        schedules = [
            DeploymentScheduleCreate(
                schedule=CronSchedule(cron=s.cron, timezone=s.timezone),
                active=s.active,
                parameters=s.parameters,
                slug=s.slug,
            )
            for s in self.schedules
        ]
        return flow.to_deployment(
            name=self.name,
            description=self.description,
            tags=self.tags,
            parameters=self.parameters,
            schedules=schedules or None,
            concurrency_limit=concurrency,
            enforce_parameter_schema=self.enforce_parameter_schema,
        )


class PrefectYaml(_Strict):
    name: str
    prefect_version: str | None = Field(default=None, alias="prefect-version")
    definitions: dict[str, Any] = Field(default_factory=dict)
    deployments: list[Declaration]
    build: Any = None
    push: Any = None
    pull: Any = None


def load(path: Path = PREFECT_YAML) -> PrefectYaml:
    return PrefectYaml.model_validate(yaml.safe_load(path.read_text()))
