"""What the sandbox started, kept in `<state>/sandbox.json` so that `down` stops exactly that."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tools.settings import state_dir


@dataclass
class State:
    path: Path
    data: dict

    @classmethod
    def load(cls) -> State:
        path = state_dir() / "sandbox.json"
        data = json.loads(path.read_text()) if path.exists() else {}
        return cls(path, data)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=2, sort_keys=True))

    def component(self, name: str) -> dict:
        return self.data.setdefault(name, {})
