"""moto's AWS server as the sandbox, the bench and the tests start it: `python -m devenv.moto_server -H
127.0.0.1 -p PORT` (moto_server's own arguments), with four fixes of moto 5.2.

moto parses `UserData` in CreateLaunchTemplate but keeps it raw in CreateLaunchTemplateVersion, and later
asserts it is parsed: once Terraform has made version 2 of a launch template (the AWS provider sends the
field), an auto scaling group on that version cannot launch an instance (HTTP 500), so no instance can be
replaced. Here the version's `UserData` is parsed the way CreateLaunchTemplate does.

moto copies the launch template's own tags (CreateLaunchTemplate's `TagSpecifications` for resource type
`launch-template`) into the data of its first version, where AWS keeps only the tags for the instances and
volumes it launches. Terraform then reads back a `tag_specifications` block its configuration does not
have: a tagged launch template (the xwiki stack's, tagged for the require-tags policy) never converges,
every plan shows a change and detect-drift reports drift. Here `launch-template` tag specifications are
kept out of the version's data (AWS rejects that resource type inside launch template data anyway); the
template itself keeps its tags.

moto answers DescribeLaunchTemplates with the tags a launch template had when it was created (a copy
taken then), so tags added or changed later (CreateTags, which Terraform uses to update them) are stored
but never shown: a launch template whose tags change (an adopted orphan, a new `owner`) never converges.
Here a launch template's `tags` are read from the tag store each time, as for other EC2 resources.

moto's server is threaded but its in-memory backends are not thread-safe: under the test suite's parallel
load a request could fail half-way after its change was made, and the client's retry then met its own
result (Terraform's CreateSecurityGroup answered `InvalidGroup.Duplicate` for the group it had just
created). Here requests are handled one at a time, as one AWS account's API would see them in order.
A client's retry (the AWS SDKs' `amz-sdk-request: attempt=N` header, N > 1) is written to the log with
its action and invocation id, so a retried non-idempotent call can be traced. Nothing else changes.
"""

from __future__ import annotations

import io
import sys
import threading
import urllib.parse
from typing import Any


def _patch() -> None:
    from moto.ec2.models.launch_templates import LaunchTemplate
    from moto.ec2.utils import parse_user_data

    create_version = LaunchTemplate.create_version

    def create_version_parsed(self: LaunchTemplate, data: dict[str, Any], description: str) -> Any:
        if isinstance(data.get("UserData"), str):
            data = {**data, "UserData": parse_user_data(data["UserData"]) if data["UserData"] else None}
        return create_version(self, data, description)

    LaunchTemplate.create_version = create_version_parsed

    from moto.ec2.models.launch_templates import LaunchTemplateBackend

    create_template = LaunchTemplateBackend.create_launch_template

    def create_template_own_tags_apart(
        self: LaunchTemplateBackend,
        name: str,
        description: str,
        data: dict[str, Any],
        tag_spec: dict[str, Any],
    ) -> Any:
        specs = data.get("TagSpecifications")
        if isinstance(specs, list):
            kept = [
                s for s in specs if not (isinstance(s, dict) and s.get("ResourceType") == "launch-template")
            ]
            data = {k: v for k, v in data.items() if k != "TagSpecifications"}
            if kept:
                data["TagSpecifications"] = kept
        return create_template(self, name, description, data, tag_spec)

    LaunchTemplateBackend.create_launch_template = create_template_own_tags_apart
    LaunchTemplate.tags = property(LaunchTemplate.get_tags, lambda self, value: None)  # live, not a copy

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    dispatch = DomainDispatcherApplication.__call__
    one_at_a_time = threading.Lock()

    def dispatch_serialised(self: DomainDispatcherApplication, environ: dict, start_response: Any) -> Any:
        attempt = environ.get("HTTP_AMZ_SDK_REQUEST", "")
        if attempt and not attempt.startswith("attempt=1;"):
            _log_retry(environ, attempt)
        with one_at_a_time:
            return dispatch(self, environ, start_response)

    DomainDispatcherApplication.__call__ = dispatch_serialised


def _log_retry(environ: dict, attempt: str) -> None:
    """One line in the server's log for a client's retry: method, path, action, invocation id."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    action = environ.get("HTTP_X_AMZ_TARGET") or ""
    if not action and 0 < length < 65536 and "form" in environ.get("CONTENT_TYPE", ""):
        body = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(body)
        action = ",".join(urllib.parse.parse_qs(body.decode(errors="replace")).get("Action", []))
    print(
        f"retried request: {attempt} {environ.get('REQUEST_METHOD')} {environ.get('PATH_INFO')} {action} "
        f"invocation {environ.get('HTTP_AMZ_SDK_INVOCATION_ID', '?')}",
        file=sys.stderr,
        flush=True,
    )


def argv(port: int) -> list[str]:
    """The command line of a moto server on 127.0.0.1:`port`, in this interpreter."""
    return [sys.executable, "-m", "devenv.moto_server", "-H", "127.0.0.1", "-p", str(port)]


if __name__ == "__main__":
    _patch()
    from moto.server import main

    sys.exit(main())
