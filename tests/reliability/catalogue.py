"""Which test covers which fault, bad input and secret check of issue 7 (read by figures.py).

Node ids are pytest node ids relative to the repository root; a node id without `[...]` also covers
all its parametrized cases. Items covered by tests outside tests/reliability are referenced, not copied.
"""

from __future__ import annotations

from dataclasses import dataclass

REL = "tests/reliability"


@dataclass(frozen=True)
class Item:
    category: str  # fault | bad-input | secret
    name: str
    nodes: tuple[str, ...]
    note: str = ""


# The kill-point harness (tests/reliability/kill_points.py): one test per variant walks every kill point.
KP_CANCEL = (
    f"{REL}/test_rollout_kill_points_cancel.py::test_rollout_cancelled_at_each_kill_point_then_converges"
)
KP_KILL = (
    f"{REL}/test_rollout_kill_points_sigkill.py::test_rollout_sigkilled_at_each_kill_point_then_converges"
)
KP_CHECKS = "no tool left, lock free, state equals AWS (launch template and ASG), the next run converges"

FAULTS = [
    Item(
        "fault",
        "cancel of a tool that saves its work on SIGINT (Terraform's protocol): exactly one SIGINT, to the "
        "tool alone, its graceful stop waited for; its plugins never signalled",
        (
            "tests/integration/test_stopping.py::test_one_sigint_to_the_tool_alone_then_it_finishes_its_graceful_stop",
        ),
    ),
    Item(
        "fault",
        "a tool that ignores its SIGINT past the stop window: its whole process group (plugins) killed",
        ("tests/integration/test_stopping.py::test_a_tool_that_ignores_its_sigint_loses_its_whole_group",),
    ),
    Item(
        "fault",
        "flow process SIGKILLed (worker host lost) while its tool writes: the tool finishes (no SIGPIPE)",
        ("tests/integration/test_stopping.py::test_a_tool_outlives_its_sigkilled_flow_process",),
    ),
    Item(
        "fault",
        "Prefect cancel of a served run whose tool runs inline or in a submitted task: SIGINT first, "
        "no process left",
        ("tests/integration/test_process.py::test_prefect_cancel_of_a_served_flow_run_leaves_no_process",),
    ),
    Item(
        "fault",
        "registry down during push: retried, then a clear error, nothing deployed",
        (
            "tests/e2e/test_release.py::test_registry_down_is_retried_then_fails_clearly",
            "tests/integration/test_docker_engine.py::test_registry_down_is_a_transient_push_failure",
        ),
    ),
    Item(
        "fault",
        "wrong registry password: one attempt, auth error",
        (
            "tests/e2e/test_release.py::test_wrong_registry_password_fails_once_with_an_auth_error",
            "tests/integration/test_docker_engine.py::test_push_with_a_wrong_password_is_an_auth_error",
        ),
    ),
    Item(
        "fault",
        "builder container killed mid-build (docker kill): build exits non-zero, clear error",
        (f"{REL}/test_faults.py::test_builder_container_killed_mid_build_fails_clearly",),
    ),
    Item(
        "fault",
        "disk full in the build (1 MiB tmpfs output dir): clear error",
        (f"{REL}/test_faults.py::test_disk_full_in_the_build_is_a_clear_error",),
    ),
    Item(
        "fault",
        "Packer fails mid-bake (private moto stopped): no apply, no launch template change",
        (f"{REL}/test_faults.py::test_moto_stopped_mid_bake_fails_the_bake_and_nothing_is_applied",),
    ),
    Item(
        "fault",
        "moto unreachable at apply: clear error, state intact, lock released",
        (f"{REL}/test_faults.py::test_moto_unreachable_at_apply_keeps_state_and_releases_the_lock",),
    ),
    Item(
        "fault",
        "Terraform state lock held by another process: StateLocked after the lock timeout",
        ("tests/integration/test_terraform.py::test_a_lock_held_by_another_terraform_gives_state_locked",),
    ),
    Item(
        "fault",
        "flow run cancelled during packer build: no packer left behind, next run succeeds",
        (f"{REL}/test_faults.py::test_rollout_cancelled_mid_bake_then_killed_mid_apply_then_converges",),
    ),
    Item(
        "fault",
        "flow run cancelled during the ansible run: ansible and its children stopped",
        (
            "tests/e2e/test_refresh.py::test_cancel_stops_ansible_and_its_children",
            "tests/integration/test_ansible.py::test_cancel_kills_ansible_and_its_children",
        ),
    ),
    Item(
        "fault",
        "flow run cancelled during the sbt build: no builder container left",
        ("tests/e2e/test_release.py::test_cancelled_build_leaves_no_builder_container",),
    ),
    Item(
        "fault",
        "flow run cancelled during terraform apply of a saved plan: lock released, no process left, state "
        "equals AWS, next run succeeds and converges",
        (
            f"{REL}/test_cancel_apply.py::test_cancel_during_terraform_apply_releases_the_lock_and_the_next_run_succeeds[saved-plan]",
            "tests/integration/test_process.py::test_prefect_cancel_of_a_served_flow_run_leaves_no_process",
        ),
    ),
    Item(
        "fault",
        "flow run cancelled during the one-process `terraform apply -json`: lock released, no process left, "
        "state equals AWS, next run succeeds and converges",
        (
            f"{REL}/test_cancel_apply.py::test_cancel_during_terraform_apply_releases_the_lock_and_the_next_run_succeeds[one-process]",
        ),
    ),
    Item(
        "fault",
        "flow process SIGKILLed mid-rollout (during terraform apply): next run converges",
        (
            f"{REL}/test_faults.py::test_rollout_cancelled_mid_bake_then_killed_mid_apply_then_converges",
            "tests/e2e/test_scale_out.py::test_a_dead_worker_host_crashes_its_rollout_and_a_rerun_converges",
        ),
    ),
    Item(
        "fault",
        "deploy health check fails: previous version keeps serving",
        ("tests/e2e/test_release.py::test_release_replaces_the_container_and_rolls_back_an_unhealthy_one",),
    ),
    Item(
        "fault",
        "an unreachable Ansible host among several: others refreshed, bad host named",
        (
            "tests/e2e/test_refresh.py::test_failed_and_unreachable_hosts_fail_the_run_others_refreshed",
            "tests/integration/test_ansible.py::test_closed_port_is_unreachable",
            "tests/integration/test_ansible_unreachable.py::"
            "test_unreachable_host_in_a_loop_reports_the_connection_error",
        ),
    ),
    Item(
        "fault",
        "wrong vault password: clear error, password nowhere",
        ("tests/e2e/test_refresh.py::test_wrong_vault_password_fails_clearly",),
    ),
    Item(
        "fault",
        "Docker engine restarted between runs: restart=always containers back, next run works",
        (f"{REL}/test_engine_restart.py::test_engine_restart_between_runs",),
        "restarts the sandbox's own engine; skipped when the engine is a user's",
    ),
    Item(
        "fault",
        "prune with more images and references than one page of every AWS listing (page size 2): every "
        "AMI in use kept (launch template versions, instance, ASG, latest bake record), only the rest go",
        ("tests/e2e/test_prune.py::test_prune_with_more_references_than_a_page_keeps_every_referenced_ami",),
    ),
    Item(
        "fault",
        "a reference to a prune candidate appears after the decision (launch template version, a bake "
        "reusing it): re-checked before the deregister, kept",
        ("tests/e2e/test_prune.py::test_a_reference_made_after_the_decision_is_seen_before_the_deregister",),
    ),
    Item(
        "fault",
        "prune during an apply-stack that points the launch template at an old AMI: the AMI survives",
        ("tests/e2e/test_prune.py::test_prune_during_an_apply_of_an_old_ami_keeps_it",),
    ),
    Item(
        "fault",
        "two concurrent bakes of the same host and content: one AMI, both report it; an untagged AMI of "
        "the name (interrupted bake) adopted, never deregistered",
        (
            "tests/e2e/test_bake_concurrency.py::test_two_concurrent_bakes_of_the_same_content_end_with_one_ami",
        ),
    ),
    Item(
        "fault",
        "container replaced: its named and anonymous volumes carry over to the new one",
        (f"{REL}/test_containers.py::test_replace_keeps_named_and_anonymous_volumes",),
    ),
    Item(
        "fault",
        "new container unhealthy: the previous one is back with its full configuration and data",
        (f"{REL}/test_containers.py::test_restore_brings_back_the_full_configuration",),
    ),
    Item(
        "fault",
        "previous container gone during the health check: restore fails as AppDown, notification sent",
        (f"{REL}/test_containers.py::test_a_failed_restore_is_app_down_and_notifies",),
    ),
    Item(
        "fault",
        "deploy-app SIGKILLed right after the old container stopped: next run serves, data intact",
        (
            f"{REL}/test_containers.py::test_deploy_killed_mid_replace_next_run_serves_with_the_data",
            f"{REL}/test_containers.py::test_a_replace_interrupted_after_the_rename_is_picked_up",
            f"{REL}/test_containers.py::test_a_set_aside_container_left_after_the_new_one_started_is_discarded",
        ),
    ),
    Item(
        "fault",
        "deploy-app SIGKILLed between `docker create` and `docker start` of the new container (the start "
        "held by a proxy in front of the engine, then dropped): the next run removes the never-started "
        "container, brings back the one that served, keeps its image pin; it serves with both volumes' "
        "data and no other container of the app is left",
        (
            f"{REL}/test_containers_killed.py::test_deploy_sigkilled_between_create_and_start_next_run_serves_with_the_data",
            f"{REL}/test_containers_killed.py::test_set_aside_removes_a_never_started_container_and_brings_back_the_one_that_served",
        ),
    ),
    Item(
        "fault",
        "deploy-app cancelled (Prefect API) between `docker create` and `docker start` of the new container: "
        "the next run serves with both volumes' data, the image that served stays pinned, no container left "
        "but the serving one",
        (
            f"{REL}/test_containers_killed.py::test_deploy_cancelled_between_create_and_start_next_run_serves_with_the_data",
        ),
    ),
    Item(
        "fault",
        "image of a second registry deployed with the first registry's block: its password never sent, "
        "clear auth error (anonymous pull works where allowed)",
        (
            f"{REL}/test_registry_scope.py::test_the_first_registrys_password_never_reaches_a_second_registry",
            f"{REL}/test_registry_scope.py::test_an_image_of_an_open_registry_is_pulled_anonymously",
        ),
    ),
    Item(
        "fault",
        "push to another registry than the credentials block's: refused before any call",
        (
            f"{REL}/test_registry_scope.py::test_a_push_to_another_registry_than_the_blocks_is_refused_before_any_call",
        ),
    ),
    Item(
        "fault",
        "ami-rollout cancelled (Prefect API) while packer bakes: packer cleans up, no state; the next run "
        "converges",
        (KP_CANCEL,),
    ),
    Item("fault", f"ami-rollout cancelled during terraform plan: {KP_CHECKS}", (KP_CANCEL,)),
    Item("fault", f"ami-rollout cancelled right after terraform apply starts: {KP_CHECKS}", (KP_CANCEL,)),
    Item(
        "fault",
        "ami-rollout cancelled while CreateLaunchTemplateVersion is in flight: no tool left, lock free, AWS "
        "at most one version ahead of the state; the next run heals it (refresh-only) and converges",
        (KP_CANCEL,),
    ),
    Item("fault", f"ami-rollout cancelled while Terraform writes its state to S3: {KP_CHECKS}", (KP_CANCEL,)),
    Item(
        "fault",
        "ami-rollout flow process SIGKILLed while CreateLaunchTemplateVersion is in flight (the orphaned "
        f"terraform finishes): {KP_CHECKS}",
        (KP_KILL,),
    ),
    Item(
        "fault",
        f"ami-rollout flow process SIGKILLed while Terraform writes its state: {KP_CHECKS}",
        (KP_KILL,),
    ),
    Item(
        "fault",
        "a SIGKILLed run's stale S3 lock (its holder record names a dead process of this host): released "
        "under the stack slot, the apply converges, the lock and record gone; dead runs' workspaces swept",
        (
            f"{REL}/test_dead_runs.py::test_a_lock_of_a_dead_holder_here_is_released_and_dead_workspaces_swept",
        ),
    ),
    Item(
        "fault",
        "a lock held by another identity (container, host): never released; StateLocked names its holder "
        "and flow run; lock bytes and record unchanged",
        (f"{REL}/test_dead_runs.py::test_a_lock_of_another_identity_is_never_released",),
    ),
    Item(
        "fault",
        "orphans of a killed first apply (security group, launch template, ASG in AWS, not in state): "
        "adopted by import, no duplicate, the next plan empty",
        (f"{REL}/test_dead_runs.py::test_orphans_of_a_killed_first_apply_are_adopted_and_the_run_converges",),
        note="the orphans are made with boto3 under the stack's names: what a first apply killed at that "
        "moment leaves (test_dead_run_terraform.py hits the moment itself)",
    ),
    Item(
        "fault",
        "a first apply SIGKILLed (flow process, terraform, provider) while its state write is held, the "
        "write then dropped: the next run releases the dead holder's lock, adopts the three objects, no "
        "duplicate; state equals AWS, lock free, a further plan empty",
        (
            f"{REL}/test_dead_run_terraform.py::test_a_first_apply_killed_at_its_state_write_is_adopted_by_the_next_run",
        ),
    ),
    Item(
        "fault",
        "a run SIGKILLed while its terraform apply waits on AWS: the next run waits for the orphaned "
        "terraform and starts none beside it; one CreateSecurityGroup reached AWS, state equals AWS, lock "
        "free, no tool left, a further plan empty",
        (
            f"{REL}/test_dead_run_terraform.py::test_the_next_run_waits_for_a_dead_runs_terraform_and_never_applies_beside_it",
        ),
    ),
]


def bad_inputs() -> list[Item]:
    from tests.reliability.test_bad_inputs import CASES

    items = [
        Item(
            "bad-input",
            case,
            (f"{REL}/test_bad_inputs.py::test_bad_input_is_rejected_before_any_side_effect[{case}]",),
        )
        for case in sorted(CASES)
    ]
    items += [
        Item(
            "bad-input",
            "zip with ../ entries",
            (
                f"{REL}/test_bad_inputs.py::test_zip_with_parent_entries_is_rejected_before_anything_is_written",
                "tests/unit/test_sbt.py::test_unzip_rejects_entries_escaping_the_destination",
            ),
        ),
        *(
            Item(
                "bad-input",
                f"packer var file: {label}",
                (f"{REL}/test_bad_inputs.py::test_var_file_error_is_rejected_naming_the_file[{label}]",),
            )
            for label in ("malformed", "non-object", "reserved-key")
        ),
        Item(
            "bad-input",
            "ami-rollout with an unknown stack: rejected before the bake",
            (f"{REL}/test_bad_inputs.py::test_rollout_validates_the_stack_before_baking",),
        ),
        Item(
            "bad-input",
            "plaintext tcp:// Docker engine for a flow sending secrets (unit, several shapes)",
            ("tests/integration/test_docker_host_factory.py",),
        ),
        Item(
            "bad-input",
            "builder image not on the AppSecrets allowlist (unit)",
            ("tests/unit/test_app_secrets_builders.py",),
        ),
        Item(
            "bad-input",
            "invalid cron string in prefect.yaml",
            ("tests/unit/test_declarations.py::test_an_invalid_cron_is_an_error",),
        ),
        Item(
            "bad-input",
            "secret-looking extra vars (unit, several shapes)",
            ("tests/unit/test_ansible.py::test_secret_looking_extra_vars_are_rejected",),
        ),
        Item(
            "bad-input",
            "ansible extra vars: ansible_*/magic names, Jinja at any depth, *_pass/*_token/*_key (unit)",
            ("tests/unit/test_ansible_inputs.py::test_extra_vars_rules",),
        ),
        Item(
            "bad-input",
            "ansible paths and limits rejected in-process, zero processes spawned (unit)",
            (
                "tests/unit/test_ansible_inputs.py::test_bad_paths_and_limits_are_rejected_without_a_process",
                "tests/unit/test_ansible_inputs.py::test_executable_inventory_is_never_run",
            ),
        ),
        Item(
            "bad-input",
            "secrets shorter than 8 characters refused by the block bootstrap",
            (
                "tests/unit/test_errors_and_redaction.py::"
                "test_bootstrap_refuses_a_short_secret_before_saving_anything",
            ),
        ),
    ]
    return items


SECRETS = [
    Item(
        "secret",
        "whole pipeline with metacharacter secrets: argv, logs, artifacts, errors, docker config, "
        "temp and ansible artifact dirs",
        (f"{REL}/test_secret_hygiene.py",),
    ),
    Item(
        "secret",
        "process runner: secret in no argv, log or error",
        (
            "tests/integration/test_process.py::test_a_secret_never_reaches_logs_argv_or_error",
            "tests/integration/test_process.py::test_secret_is_in_no_process_argv_while_it_runs",
        ),
    ),
    Item(
        "secret",
        "redaction of every form: lines, base64 (std/urlsafe, in a blob), URL, JSON, tracebacks",
        ("tests/unit/test_errors_and_redaction.py",),
    ),
    Item(
        "secret",
        "values decrypted from the Ansible vault are registered; no_log is a literal",
        (
            "tests/unit/test_ansible_inputs.py::test_vault_values_are_registered_for_redaction",
            "tests/unit/test_ansible_inputs.py::test_no_log_is_a_literal_in_every_role",
        ),
    ),
    Item(
        "secret",
        "webhook URL: a block secret, in no error, state message or log of a failed notification",
        ("tests/integration/test_notification_secret.py",),
    ),
    Item(
        "secret",
        "failure paths (registry auth error, failed build, failed apply): logs, state messages, errors and "
        "every tool's environment hold no secret in any encoding",
        (f"{REL}/test_secret_failure_paths.py",),
    ),
    Item(
        "secret",
        "each tool's environment is an allowlist: the flow process's Prefect API key and auth, database "
        "URLs, registry password and tokens reach no tool",
        ("tests/integration/test_tool_env.py",),
    ),
    Item(
        "secret",
        "docker login writes no docker config",
        ("tests/integration/test_docker_engine.py::test_login_writes_no_docker_config",),
    ),
]


def items() -> list[Item]:
    return [*FAULTS, *bad_inputs(), *SECRETS]
