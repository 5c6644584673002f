"""Settings: defaults, a TOML config file, and ``ANOMALY_REAPER_<SETTING>`` environment variables.

Precedence, lowest to highest: built-in defaults, the config file, environment variables,
explicit overrides (command-line flags).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError

ENV_PREFIX = "ANOMALY_REAPER_"
#: Settings that no longer exist; a config file written before still loads (they are ignored).
RETIRED = ("models_dir",)


def default_home() -> Path:
    """Folder for the database, uploads, models and caches (``ANOMALY_REAPER_HOME`` or ./data)."""
    return Path(os.environ.get(ENV_PREFIX + "HOME", "data")).expanduser()


def default_config_path() -> Path:
    """Path of the TOML config file (``ANOMALY_REAPER_CONFIG`` or <home>/config.toml)."""
    env = os.environ.get(ENV_PREFIX + "CONFIG")
    return Path(env).expanduser() if env else default_home() / "config.toml"


@dataclass
class Settings:
    """Every setting of the project, with its default.

    Paths left empty are derived from :func:`default_home`.
    """

    db_url: str = ""
    uploads_dir: str = ""
    cache_dir: str = ""
    embedder: str = "local"
    patch_size: int = 32
    source_method: str = "auto"
    threshold_mode: str = "sigma"
    threshold_value: float = 2.0
    n_components: float = 5
    normalize_residuals: int = 1
    normal_weight: int = 30
    max_file_mb: float = 512.0
    max_pixels: int = 64_000_000
    vertex_project: str = ""
    vertex_location: str = "us-central1"
    vertex_endpoint: str = ""
    vertex_dimension: int = 1408
    vertex_timeout_s: float = 30.0
    vertex_max_retries: int = 5
    vertex_requests_per_minute: float = 120.0
    vertex_concurrency: int = 4
    load_demo: int = 1

    def __post_init__(self) -> None:
        home = default_home()
        if not self.db_url:
            self.db_url = f"sqlite:///{home / 'reaper.db'}"
        self.uploads_dir = self.uploads_dir or str(home / "uploads")
        self.cache_dir = self.cache_dir or str(home / "cache")
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` for a value that cannot work."""
        # Each vocabulary is its owner's; these modules import nothing heavy.
        from .embedders.vertex import DIMENSIONS
        from .sources import SOURCE_METHODS
        from .thresholds import check_threshold

        try:
            check_threshold(self.threshold_mode, self.threshold_value)
        except ValueError as exc:
            raise ConfigError(f"threshold_mode / threshold_value: {exc}") from None
        if not 8 <= self.patch_size <= 512:
            raise ConfigError("patch_size must be between 8 and 512 pixels")
        if self.vertex_dimension not in DIMENSIONS:
            raise ConfigError(f"vertex_dimension must be one of {', '.join(map(str, DIMENSIONS))}")
        if self.normal_weight < 1:
            raise ConfigError("normal_weight must be a whole number ≥ 1 (1: labels are not used)")
        if self.source_method not in SOURCE_METHODS:
            raise ConfigError(f"source_method must be one of {', '.join(SOURCE_METHODS)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(name: str, value: Any) -> Any:
    types = {f.name: f.type for f in fields(Settings)}
    if name not in types:
        raise ConfigError(f"unknown setting {name!r}")
    kind = types[name]
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"setting {name} expects a {kind}, got {value!r}") from None


def load_settings(config_path: Path | None = None, **overrides: Any) -> Settings:
    """Build :class:`Settings` from the config file, the environment and ``overrides``.

    ``overrides`` whose value is ``None`` are ignored, so CLI flags can be passed straight in.
    """
    path = Path(config_path) if config_path else default_config_path()
    values: dict[str, Any] = {}
    if path.is_file():
        try:
            values.update(tomllib.loads(path.read_text()))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    for f in fields(Settings):
        env = os.environ.get(ENV_PREFIX + f.name.upper())
        if env is not None and env != "":
            values[f.name] = env
    values.update({k: v for k, v in overrides.items() if v is not None})
    for key in RETIRED:
        values.pop(key, None)
    return Settings(**{k: _coerce(k, v) for k, v in values.items()})


def save_settings(updates: dict[str, Any], config_path: Path | None = None) -> Path:
    """Merge ``updates`` into the TOML config file and return its path."""
    path = Path(config_path) if config_path else default_config_path()
    current: dict[str, Any] = {}
    if path.is_file():
        current = tomllib.loads(path.read_text())
    for key in RETIRED:
        current.pop(key, None)
    current.update({k: _coerce(k, v) for k, v in updates.items()})
    Settings(**current)  # validate before writing
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for key, value in sorted(current.items()):
        if isinstance(value, str):
            escaped = value.replace("\\", "\\\\").replace('"', '\\"')
            lines.append(f'{key} = "{escaped}"')
        else:
            lines.append(f"{key} = {value!r}")
    path.write_text("\n".join(lines) + "\n")
    return path
