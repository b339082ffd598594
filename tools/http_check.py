"""One HTTP health probe, shared by deploy-app's health check and the rollout's health gate."""

from __future__ import annotations

import urllib.error
import urllib.request


def http_ok(url: str, timeout: float = 3.0) -> tuple[bool, str]:
    """One GET without any proxy; resets, refusals and timeouts are "not yet healthy", never an error."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            return 200 <= response.status < 400, f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:  # URLError, ConnectionResetError, refused, timeout
        return False, f"{type(exc).__name__}: {exc}"
