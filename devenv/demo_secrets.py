"""The demo's secrets, never committed: the Ansible vault password and the xwiki database password it
protects (once per checkout), the sample app's secrets (once per sandbox)."""

from __future__ import annotations

import json
import os
import re
import secrets
from pathlib import Path

from devenv.processes import log
from tools.settings import INFRA_DIR, REPO_ROOT

# The example vaulted variables of the xwiki host (the article's host_vars/xwiki) and the vault password
# that protects them: generated once per checkout by `up` (every sandbox of this checkout shares them, as
# Ansible reads host_vars from the inventory's tree), gitignored, never committed or baked into an image.
VAULT_FILE = INFRA_DIR / "ansible" / "host_vars" / "xwiki" / "vault.yml"
VAULT_PASSWORD_FILE = INFRA_DIR / "ansible" / ".vault-password"
APP_SECRET_NAMES = ("PROJECT_DB_PASSWORD", "PROJECT_S3_ACCESS_KEY", "PROJECT_S3_SECRET_KEY")


def ensure_demo_secrets(env: dict[str, str]) -> None:
    """The demo's secrets, never committed: the Ansible vault password (VAULT_PASSWORD_FILE, 0600) and the
    xwiki database password it protects (vaulted into VAULT_FILE), made once per checkout; the sample
    app's secrets, made once per sandbox. All of them land in the sandbox's 0600 env file."""
    password = _read_or_create(VAULT_PASSWORD_FILE, secrets.token_urlsafe(18))
    env["DEVOPS_VAULT_PASSWORD"] = password
    from ansible.parsing.vault import VaultLib, VaultSecret  # the venv's Ansible, only when `up` runs

    vault = VaultLib([("default", VaultSecret(password.encode()))])
    db_password = _vaulted_value(vault, VAULT_FILE)
    if db_password is None:
        db_password = secrets.token_urlsafe(18)
        body = "".join(f"  {line}\n" for line in vault.encrypt(db_password).decode().splitlines())
        VAULT_FILE.parent.mkdir(parents=True, exist_ok=True)
        partial = VAULT_FILE.with_name(f".{VAULT_FILE.name}.{os.getpid()}")
        partial.write_text(
            "# Written by `scripts/sandbox up` (gitignored): the demo's generated xwiki database password,\n"
            "# vaulted with the generated password in infra/ansible/.vault-password.\n"
            "xwiki_db_password: !vault |\n" + body
        )
        partial.replace(VAULT_FILE)
        log(f"demo secrets: vaulted a new xwiki database password into {VAULT_FILE.relative_to(REPO_ROOT)}")
    env["DEVOPS_SANDBOX_XWIKI_DB_PASSWORD"] = db_password
    if not env.get("DEVOPS_APP_SECRETS"):
        app = {name: secrets.token_urlsafe(18) for name in APP_SECRET_NAMES}
        env["DEVOPS_APP_SECRETS"] = json.dumps(
            {**app, "PROJECT_DB_NAME": "hire_help", "PROJECT_DB_USERNAME": "hire_help"}
        )


def _read_or_create(path: Path, value: str) -> str:
    """The file's stripped content; created 0600 with `value` first when missing (O_EXCL: two `up`s that
    race agree on the first writer's value)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value


def _vaulted_value(vault, path: Path) -> str | None:  # noqa: ANN001 - ansible's VaultLib
    """The inline `!vault |` value of `path` decrypted with `vault`, or None (missing, other password)."""
    match = re.search(r"!vault \|\n((?:[ ]+\S+\n)+)", path.read_text()) if path.exists() else None
    if not match:
        return None
    try:
        return vault.decrypt("".join(line.strip() + "\n" for line in match[1].splitlines())).decode()
    except Exception:  # noqa: BLE001 - any decryption failure means: write it anew
        return None
