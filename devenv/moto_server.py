"""moto's AWS server as the sandbox, the bench and the tests start it: `python -m devenv.moto_server -H
127.0.0.1 -p PORT` (moto_server's own arguments), with five fixes of moto 5.2.

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

Under that load the AWS SDKs still retry some calls whose first attempt moto has answered (a CI run's log
showed `attempt=2` of UpdateAutoScalingGroup, DescribeSecurityGroups and others after moto's 200, and two
earlier runs failed on a retried CreateSecurityGroup and RevokeSecurityGroupEgress): the first answer did
not reach the client in time. A retried call that changes something then
fails against its own first result (`InvalidGroup.Duplicate`, `InvalidPermission.NotFound`), which AWS's
network would not cause. Here the answers to every call but GET and HEAD (up to 256 KB) are kept by the
SDK's invocation id (the same on every attempt of one call), and a retry of a call moto already answered gets
that answer again instead of being run twice; every retry is written to the log (`retried request`,
`replayed the first answer`). GET and HEAD requests, and a first attempt that failed (5xx), are
run again as usual; a query-API read (a POST such as DescribeImages) is replayed like any other call.
"""

from __future__ import annotations

import io
import re
import sys
import threading
import urllib.parse
from collections import OrderedDict
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
    answers = _Answers()

    def dispatch_serialised(self: DomainDispatcherApplication, environ: dict, start_response: Any) -> Any:
        invocation = environ.get("HTTP_AMZ_SDK_INVOCATION_ID", "")
        attempt = _attempt(environ.get("HTTP_AMZ_SDK_REQUEST", ""))
        if attempt > 1:
            _log_retry(environ, attempt, invocation)
        with one_at_a_time:
            first = answers.get(invocation) if attempt > 1 else None
            if first is not None:
                print(
                    f"replayed the first answer ({first[0]}) to invocation {invocation}",
                    file=sys.stderr,
                    flush=True,
                )
                start_response(first[0], first[1])
                return [first[2]]
            if not invocation or environ.get("REQUEST_METHOD") in ("GET", "HEAD"):
                return dispatch(self, environ, start_response)  # reads: a retry does no harm
            status, headers, body = _answer(dispatch, self, environ)
            answers.keep(invocation, status, headers, body)
        start_response(status, headers)
        return [body]

    DomainDispatcherApplication.__call__ = dispatch_serialised


Answer = tuple[str, list[tuple[str, str]], bytes]


class _Answers:
    """The answers to the last calls that change something, by the SDK's invocation id (the same on every
    attempt of one call). Kept only when moto did not fail (a 5xx is retried for real), and small."""

    KEEP, MAX_BYTES = 2048, 256 * 1024

    def __init__(self) -> None:
        self._by_invocation: OrderedDict[str, Answer] = OrderedDict()

    def get(self, invocation: str) -> Answer | None:
        return self._by_invocation.get(invocation) if invocation else None

    def keep(self, invocation: str, status: str, headers: list[tuple[str, str]], body: bytes) -> None:
        if int(status[:3]) >= 500 or len(body) > self.MAX_BYTES:
            return
        self._by_invocation[invocation] = (status, headers, body)
        while len(self._by_invocation) > self.KEEP:
            self._by_invocation.popitem(last=False)


def _answer(dispatch: Any, app: Any, environ: dict) -> Answer:
    """Run the request through moto and read its whole answer (inside the lock)."""
    started: dict[str, Any] = {}
    chunks: list[bytes] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started.update(status=status, headers=headers)
        return chunks.append

    result = dispatch(app, environ, start_response)
    try:
        chunks.extend(result)
    finally:
        if hasattr(result, "close"):
            result.close()
    return started["status"], list(started["headers"]), b"".join(chunks)


def _attempt(header: str) -> int:
    """The attempt number of the SDKs' `amz-sdk-request: attempt=N; max=M` header (1 without one)."""
    match = re.match(r"\s*attempt=(\d+)", header)
    return int(match.group(1)) if match else 1


def _log_retry(environ: dict, attempt: int, invocation: str) -> None:
    """One line in the server's log for a client's retry: method, path, action, invocation id."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    action = environ.get("HTTP_X_AMZ_TARGET") or ""
    if not action and 0 < length < 65536 and "form" in environ.get("CONTENT_TYPE", ""):
        body = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(body)
        action = ",".join(urllib.parse.parse_qs(body.decode(errors="replace")).get("Action", []))
    print(
        f"retried request: attempt {attempt} {environ.get('REQUEST_METHOD')} {environ.get('PATH_INFO')} "
        f"{action} invocation {invocation or '?'}",
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
