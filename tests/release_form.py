"""The release form from flat keys, as the tests write their cases: each stage's option goes into its
section (`build`, `publish`, `deploy`); the rest stays at the top (flows/release.py ReleaseParams)."""

from __future__ import annotations

from typing import Any

SECTIONS = {
    "build": {
        "builder_image": "builder_image",
        "build_command": "build_command",
        "build_env": "env",
        "build_timeout_seconds": "timeout_seconds",
        "cache_volume": "cache_volume",
        "cpus": "cpus",
        "memory": "memory",
    },
    "publish": {
        "image_repository": "image_repository",
        "extra_tags": "extra_tags",
        "base_image": "base_image",
        "push_retries": "push_retries",
        "retry_delay_seconds": "retry_delay_seconds",
    },
    "deploy": {
        "ports": "ports",
        "env": "env",
        "command": "command",
        "health": "health",
        "force_redeploy": "force_redeploy",
    },
}


def release_form(**flat: Any) -> dict[str, Any]:
    """`release_form(app_path=..., builder_image=..., ports=[...])` -> the nested ReleaseParams values."""
    form: dict[str, Any] = {}
    for key, value in flat.items():
        section = next((name for name, keys in SECTIONS.items() if key in keys), None)
        if section is None:
            form[key] = value
        else:
            form.setdefault(section, {})[SECTIONS[section][key]] = value
    return form
