"""Settings: defaults, a TOML config file, and ``ANOMALY_REAPER_<SETTING>`` environment variables.

Precedence, lowest to highest: built-in defaults, the config file, environment variables,
explicit overrides (command-line flags).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError

ENV_PREFIX = "ANOMALY_REAPER_"
#: ANOMALY_REAPER_* variables that are not settings but still mean something.
ENV_NOT_SETTINGS = ("HOME", "CONFIG")
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
    #: A file holding the database password (kept out of the URL, so never printed).
    db_password_file: str = ""
    uploads_dir: str = ""
    cache_dir: str = ""
    embedder: str = "local+core+stars"
    patch_size: int = 32
    source_method: str = "auto"
    threshold_mode: str = "sigma"
    threshold_value: float = 2.0
    n_components: float = 10
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
    #: Models kept besides the current one (older ones and their scores are pruned).
    keep_models: int = 3
    #: A Dask scheduler (``tcp://host:8786``) to ingest on; empty: in this process.
    scheduler: str = ""
    #: Re-ranking from labels: each label's reach as a multiple of its local scale (the distance
    #: to its 10th nearest cutout).
    rerank_radius: float = 1.0

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
        from .embedders import check_embedder_name

        check_embedder_name(self.embedder)
        if not ((self.n_components >= 1 and float(self.n_components).is_integer())
                or 0 < self.n_components < 1):
            raise ConfigError(f"n_components must be a whole number ≥ 1 or a fraction of "
                              f"variance between 0 and 1, not {self.n_components:g}")
        for name in ("max_file_mb", "max_pixels", "vertex_timeout_s", "vertex_concurrency",
                     "rerank_radius"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be greater than 0, not {getattr(self, name)}")
        for name in ("vertex_max_retries", "vertex_requests_per_minute", "keep_models"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be 0 or more, not {getattr(self, name)}")
        for name in ("normalize_residuals", "load_demo"):
            if getattr(self, name) not in (0, 1):
                raise ConfigError(f"{name} must be 0 or 1, not {getattr(self, name)}")
        if self.scheduler and not self.scheduler.startswith(("tcp://", "tls://", "inproc://")):
            raise ConfigError(f"scheduler must be a Dask scheduler address like "
                              f"tcp://host:8786, not {self.scheduler!r}")
        if self.normal_weight < 1:
            raise ConfigError("normal_weight must be a whole number ≥ 1 (1: labels are not used)")
        if self.source_method not in SOURCE_METHODS:
            raise ConfigError(f"source_method must be one of {', '.join(SOURCE_METHODS)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def shown(self) -> dict[str, Any]:
        """The settings as they may be shown or printed: the database URL's password masked."""
        return {**self.to_dict(), "db_url": mask_url(self.db_url)}

    def engine_url(self) -> str:
        """The database URL to connect with: ``db_url``, with the password from
        ``db_password_file`` when one is set (PostgreSQL's own ``PGPASSFILE`` also works)."""
        if not self.db_password_file:
            return self.db_url
        path = Path(self.db_password_file).expanduser()
        try:
            password = path.read_text().splitlines()[0].strip() if path.stat().st_size else ""
        except (OSError, UnicodeDecodeError, IndexError) as exc:
            raise ConfigError(f"db_password_file {path} cannot be read "
                              f"({getattr(exc, 'strerror', None) or exc})") from None
        from sqlalchemy.engine import make_url

        return make_url(self.db_url).set(password=password).render_as_string(
            hide_password=False)


def mask_url(url: str) -> str:
    """A database URL with its password replaced by ``***``, for messages and logs."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy understands: mask anything between : and @
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def _coerce(name: str, value: Any) -> Any:
    types = {f.name: f.type for f in fields(Settings)}
    if name not in types:
        close = difflib.get_close_matches(name, types, n=1)
        raise ConfigError(f"unknown setting {name!r}"
                          + (f"; did you mean {close[0]!r}?" if close else ""))
    kind = types[name]
    try:
        if isinstance(value, bool):
            raise TypeError
        if kind == "int":
            number = float(value)
            if not number.is_integer():
                raise ValueError
            return int(number)
        if kind == "float":
            number = float(value)
            if not math.isfinite(number):
                raise ValueError
            return number
        return str(value)
    except (TypeError, ValueError):
        what = {"int": "a whole number", "float": "a finite number"}.get(kind, "text")
        raise ConfigError(f"setting {name} must be {what}, not {value!r}") from None


def load_settings(config_path: Path | None = None, **overrides: Any) -> Settings:
    """Build :class:`Settings` from the config file, the environment and ``overrides``.

    ``overrides`` whose value is ``None`` are ignored, so CLI flags can be passed straight in.
    """
    path = Path(config_path) if config_path else default_config_path()
    values: dict[str, Any] = {}
    if config_path and not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    if path.is_dir():
        raise ConfigError(f"config file {path} is a folder, not a file")
    if path.is_file():
        try:
            values.update(tomllib.loads(path.read_text()))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    names = {f.name for f in fields(Settings)}
    for key, env in os.environ.items():
        if not key.startswith(ENV_PREFIX) or key[len(ENV_PREFIX):] in ENV_NOT_SETTINGS:
            continue
        name = key[len(ENV_PREFIX):].lower()
        if name not in names:
            close = difflib.get_close_matches(name, names, n=1)
            raise ConfigError(f"environment variable {key} is not a setting"
                              + (f"; did you mean {ENV_PREFIX}{close[0].upper()}?"
                                 if close else ""))
        if env != "":
            values[name] = env
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
