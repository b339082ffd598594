"""moto's AWS server as the sandbox, the bench and the tests start it: `python -m devenv.moto_server -H
127.0.0.1 -p PORT` (moto_server's own arguments), with two fixes of moto 5.2.

moto parses `UserData` in CreateLaunchTemplate but keeps it raw in CreateLaunchTemplateVersion, and later
asserts it is parsed: once Terraform has made version 2 of a launch template (the AWS provider sends the
field), an auto scaling group on that version cannot launch an instance (HTTP 500), so no instance can be
replaced. Here the version's `UserData` is parsed the way CreateLaunchTemplate does.

moto's server is threaded but its in-memory backends are not thread-safe: under the test suite's parallel
load a request could fail half-way after its change was made, and the client's retry then met its own
result (Terraform's CreateSecurityGroup answered `InvalidGroup.Duplicate` for the group it had just
created). Here requests are handled one at a time, as one AWS account's API would see them in order.
Nothing else changes.
"""

from __future__ import annotations

import sys
import threading
from typing import Any


def _patch() -> None:
    from moto.ec2.models.launch_templates import LaunchTemplate
    from moto.ec2.utils import parse_user_data

    create_version = LaunchTemplate.create_version

    def create_version_parsed(self: LaunchTemplate, data: dict[str, Any], description: str) -> Any:  # noqa: ANN401
        if isinstance(data.get("UserData"), str):
            data = {**data, "UserData": parse_user_data(data["UserData"]) if data["UserData"] else None}
        return create_version(self, data, description)

    LaunchTemplate.create_version = create_version_parsed

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    dispatch = DomainDispatcherApplication.__call__
    one_at_a_time = threading.Lock()

    def dispatch_serialised(self: DomainDispatcherApplication, environ: dict, start_response: Any) -> Any:  # noqa: ANN401
        with one_at_a_time:
            return dispatch(self, environ, start_response)

    DomainDispatcherApplication.__call__ = dispatch_serialised


def argv(port: int) -> list[str]:
    """The command line of a moto server on 127.0.0.1:`port`, in this interpreter."""
    return [sys.executable, "-m", "devenv.moto_server", "-H", "127.0.0.1", "-p", str(port)]


if __name__ == "__main__":
    _patch()
    from moto.server import main

    sys.exit(main())
