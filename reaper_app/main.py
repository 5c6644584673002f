"""The dashboard's Streamlit script: page navigation and the shared sidebar."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from reaper_app import widgets

PAGES = Path(__file__).resolve().parent / "app_pages"


def main() -> None:
    st.set_page_config(page_title="Anomaly Reaper", layout="wide")
    page = st.navigation([
        st.Page(PAGES / "home.py", title="Home", default=True),
        st.Page(PAGES / "upload.py", title="Upload"),
        st.Page(PAGES / "threshold.py", title="Threshold & model"),
        st.Page(PAGES / "explore.py", title="Explore"),
        st.Page(PAGES / "gallery.py", title="Gallery"),
    ])
    # The sidebar's slot comes first, its content last: it then shows what the page has just
    # saved (a threshold), also when the page stops early.
    slot = st.sidebar.empty()
    try:
        widgets.ensure_demo()
        page.run()
    except Exception as exc:  # a database or disk that fails: one sentence, no traceback
        if not widgets.is_failure(exc):
            raise
        st.error(widgets.failure_text(exc))
    finally:
        widgets.sidebar(slot)


if __name__ == "__main__":
    main()
