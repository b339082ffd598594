"""Tasks of the release pipeline (build-app, publish-image, deploy-app) and their typed models, by stage:
`models` (parameters with `check()`, which raises InvalidInput before any side effect; results), `build`,
`publish`, `deploy`; `access` loads the blocks they need.

Each task loads the blocks it needs by name, calls `tools.sbt` / `tools.docker_engine`, logs and returns a
small pydantic result.
"""

from tasks.release.build import (
    check_builder_secrets,
    clean_artifacts,
    read_project,
    run_build,
    unpack_package,
)
from tasks.release.deploy import check_health, deploy_report, replace_container
from tasks.release.models import (
    DEFAULT_BASE_IMAGE,
    DEFAULT_BUILD_COMMAND,
    DEFAULT_BUILDER_IMAGE,
    DEFAULT_CACHE_VOLUME,
    BuildOptions,
    BuildParams,
    BuildResult,
    DeployOptions,
    DeployParams,
    DeployResult,
    Environment,
    HealthCheck,
    HealthResult,
    HealthSource,
    ImageRef,
    PortMapping,
    PublishOptions,
    PublishParams,
    read_sbt_project,
)
from tasks.release.publish import build_app_image, push_image, registry_url

__all__ = [
    "DEFAULT_BASE_IMAGE",
    "DEFAULT_BUILDER_IMAGE",
    "DEFAULT_BUILD_COMMAND",
    "DEFAULT_CACHE_VOLUME",
    "BuildOptions",
    "BuildParams",
    "BuildResult",
    "DeployOptions",
    "DeployParams",
    "DeployResult",
    "Environment",
    "HealthCheck",
    "HealthResult",
    "HealthSource",
    "ImageRef",
    "PortMapping",
    "PublishOptions",
    "PublishParams",
    "build_app_image",
    "check_builder_secrets",
    "check_health",
    "clean_artifacts",
    "deploy_report",
    "push_image",
    "read_project",
    "read_sbt_project",
    "registry_url",
    "replace_container",
    "run_build",
    "unpack_package",
]
