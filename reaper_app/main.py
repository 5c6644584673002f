"""The dashboard's Streamlit script: page navigation and the shared sidebar."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

PAGES = Path(__file__).resolve().parent / "app_pages"


def pages() -> dict[str, st.Page]:
    """The dashboard's pages by name (the file's stem)."""
    return {
        "home": st.Page(PAGES / "home.py", title="Home", default=True),
        "upload": st.Page(PAGES / "upload.py", title="Upload"),
        "threshold": st.Page(PAGES / "threshold.py", title="Threshold & model"),
        "explore": st.Page(PAGES / "explore.py", title="Explore"),
        "gallery": st.Page(PAGES / "gallery.py", title="Gallery"),
        "discover": st.Page(PAGES / "discover.py", title="Discover"),
        "timeline": st.Page(PAGES / "timeline.py", title="Timeline"),
    }


def main() -> None:
    st.set_page_config(page_title="Anomaly Reaper", layout="wide")
    page = st.navigation(list(pages().values()))
    st.session_state["_page"] = page.url_path
    # The sidebar's slot comes first, its content last: it then shows what the page has just
    # saved (a threshold), also when the page stops early. Likewise the demo's progress: the
    # page draws its title first, before the library is imported, so the first paint is quick.
    slot = st.sidebar.empty()
    demo_slot = st.empty()
    try:
        page.run()
    except Exception as exc:  # a database or disk that fails: one sentence, no traceback
        from reaper_app import widgets

        if not widgets.is_failure(exc):
            raise
        st.error(widgets.failure_text(exc))
    finally:  # also when the page stops early (st.stop)
        from reaper_app import state, widgets  # the library: seconds on a first start

        with demo_slot.container():
            widgets.ensure_demo()
        widgets.sidebar(slot)
        state.settle_heap()


if __name__ == "__main__":
    main()
