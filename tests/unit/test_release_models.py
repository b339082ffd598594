"""Parameter models and reference validation of the release flows (no tools run)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from flows.release import ReleaseParams, build_app, deploy_app, publish_image, release
from tasks.release import BuildParams, DeployOptions, DeployParams, HealthCheck, PortMapping, PublishParams
from tools import docker_engine as engine
from tools.errors import InvalidInput, PushFailed, RegistryAuthError

APP = Path(__file__).resolve().parents[2] / "infra" / "apps" / "hire-help"
DIGEST = "sha256:" + "a" * 64


def test_flow_names_are_public():
    assert [f.name for f in (build_app, publish_image, deploy_app, release)] == [
        "build-app",
        "publish-image",
        "deploy-app",
        "release",
    ]


@pytest.mark.parametrize("port", [0, -1, 65536, 100000])
def test_ports_out_of_range_are_rejected(port):
    with pytest.raises(InvalidInput, match="1-65535"):
        PortMapping(container_port=10000, host_port=port).check()
    with pytest.raises(InvalidInput, match="1-65535"):
        DeployParams(
            app_name="a",
            image_reference=f"r/x@{DIGEST}",
            ports=[PortMapping(container_port=port, host_port=80)],
        ).check()


def test_deploy_params_validate_reference_name_env_and_health():
    ok = DeployParams(app_name="hire-help-dev", image_reference=f"127.0.0.1:5000/hire-help@{DIGEST}")
    ok.check()
    for bad in ("hire-help:dev", "Hire/x@" + DIGEST, "r/x@sha256:short"):
        with pytest.raises(InvalidInput):
            DeployParams(app_name="a", image_reference=bad).check()
    with pytest.raises(InvalidInput, match="app_name"):
        DeployParams(app_name="a b", image_reference=f"r/x@{DIGEST}").check()
    with pytest.raises(InvalidInput, match="environment variable name"):
        DeployParams(app_name="a", image_reference=f"r/x@{DIGEST}", env={"BAD-NAME": "1"}).check()
    with pytest.raises(InvalidInput, match="needs a url"):
        DeployParams(app_name="a", image_reference=f"r/x@{DIGEST}", health=HealthCheck(source="http")).check()
    with pytest.raises(InvalidInput, match="published twice"):
        DeployParams(
            app_name="a",
            image_reference=f"r/x@{DIGEST}",
            ports=[PortMapping(container_port=1, host_port=2), PortMapping(container_port=1, host_port=3)],
        ).check()


@pytest.mark.parametrize("tag", ["1.0.0", "dev", "v1_2-rc.1", "A" * 128])
def test_valid_tags(tag):
    assert engine.validate_tag(tag) == tag


@pytest.mark.parametrize("tag", ["", ".x", "-x", "a:b", "a/b", "A" * 129, "sp ace"])
def test_invalid_tags(tag):
    with pytest.raises(InvalidInput, match="image tag"):
        engine.validate_tag(tag)


def test_repositories():
    assert engine.full_repository("127.0.0.1:5000", "hire-help") == "127.0.0.1:5000/hire-help"
    assert (
        engine.full_repository("http://registry.example.com:443/", "team/app")
        == "registry.example.com:443/team/app"
    )
    assert engine.full_repository("https://index.docker.io/v1/", "team/app") == "team/app"
    for bad in ("Hire-Help", "a//b", "-a", "127.0.0.1:5000/x"):
        with pytest.raises(InvalidInput):
            engine.validate_image_path(bad)
    assert engine.split_reference(f"127.0.0.1:5000/a/b@{DIGEST}") == ("127.0.0.1:5000/a/b", DIGEST)


def test_registry_errors_are_classified():
    auth = engine._registry_error("unauthorized: authentication required", "push")
    assert isinstance(auth, RegistryAuthError) and not auth.transient
    down = engine._registry_error("Get http://127.0.0.1:1/v2/: dial tcp: connection refused", "login")
    assert type(down) is PushFailed and down.transient
    bad = engine._registry_error("manifest invalid: manifest invalid", "push")
    assert type(bad) is PushFailed and not bad.transient


def test_build_and_publish_params(tmp_path):
    with pytest.raises(InvalidInput, match="not a directory"):
        BuildParams(app_path=str(tmp_path / "missing")).check()
    assert BuildParams(app_path=str(APP)).check() == APP.resolve()
    with pytest.raises(InvalidInput, match="cpus"):
        BuildParams(app_path=str(APP), cpus=0).check()
    with pytest.raises(InvalidInput, match="memory"):
        BuildParams(app_path=str(APP), memory="lots").check()
    with pytest.raises(InvalidInput, match="Dockerfile"):
        PublishParams(app_path=str(tmp_path)).check()
    with pytest.raises(InvalidInput, match="image tag"):
        PublishParams(app_path=str(APP), extra_tags=["bad tag"]).check()
    with pytest.raises(InvalidInput, match="registry host"):
        PublishParams(app_path=str(APP), image_repository="127.0.0.1:5000/hire-help").check()


def test_release_params_check_every_stage_and_derive_the_container_name(tmp_path):
    app = tmp_path / "hire-help"
    shutil.copytree(APP, app)
    params = ReleaseParams(app_path=str(app))
    params.check()
    assert params.deploy_params("hire-help").app_name == "hire-help-dev"
    assert params.build_params().timeout_seconds == params.build.timeout_seconds
    assert params.publish_params().push_retries == params.publish.push_retries
    assert params.deploy_params("hire-help").ports == params.deploy.ports  # the release's default 10000
    with pytest.raises(InvalidInput, match="1-65535"):
        ReleaseParams(
            app_path=str(app),
            deploy=DeployOptions(ports=[PortMapping(container_port=10000, host_port=70000)]),
        ).check()
    (app / "build.sbt").write_text('scalaVersion := "2.12.8"\n')
    with pytest.raises(InvalidInput, match="build.sbt: no version"):
        ReleaseParams(app_path=str(app)).check()


def test_flow_parameter_schemas_render_forms():
    from prefect.utilities.callables import parameter_schema

    schema = parameter_schema(release.fn).model_dump()
    assert "params" in schema["properties"]
    definitions = schema.get("definitions", {})
    assert {"ReleaseParams", "PortMapping", "HealthCheck"} <= set(definitions)
    assert definitions["ReleaseParams"]["properties"]["environment"]["enum"] == ["dev", "staging", "prod"]
