"""The Anomaly Reaper dashboard (Streamlit): ``anomaly-reaper run`` starts it.

``main.py`` is the Streamlit script (navigation, shared sidebar); ``state`` caches what the pages
share (the service, the current model, the cutout table); ``widgets`` draws cutouts and the
sidebar; ``plots`` makes the Plotly figures; ``app_pages/`` holds one thin script per page.
Every computation and every database access goes through :class:`reaper_core.service.Reaper`.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

#: The Streamlit script that ``anomaly-reaper run`` (and ``streamlit run``) starts.
ENTRY = Path(__file__).resolve().parent / "main.py"
#: Server and theme options, shipped with the package (also read by ``streamlit run app.py``
#: through the root ``.streamlit/config.toml`` link).
CONFIG = Path(__file__).resolve().parent / "streamlit_config.toml"


def server_flags() -> list[str]:
    """The options of :data:`CONFIG` as ``streamlit run`` flags (``--server.maxUploadSize`` …),
    so an installed dashboard gets them whatever folder it starts from."""
    flags = []
    for section, options in tomllib.loads(CONFIG.read_text()).items():
        for key, value in options.items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            flags += [f"--{section}.{key}", text]
    return flags
