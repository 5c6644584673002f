"""Anomaly Reaper dashboard: ``uv run anomaly-reaper run`` (or ``streamlit run app.py``)."""

import streamlit as st

import ui

st.set_page_config(page_title="Anomaly Reaper", layout="wide")

page = st.navigation([
    st.Page("app_pages/home.py", title="Home", default=True),
    st.Page("app_pages/upload.py", title="Upload"),
    st.Page("app_pages/threshold.py", title="Threshold & model"),
    st.Page("app_pages/explore.py", title="Explore"),
    st.Page("app_pages/gallery.py", title="Gallery"),
])
ui.ensure_demo()
# The sidebar's slot comes first, its content last: it then shows what the page has just saved
# (a threshold moved by the slider), also when the page stops early.
slot = st.sidebar.empty()
try:
    page.run()
finally:
    ui.sidebar(slot)
