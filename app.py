"""Thin entry for ``streamlit run app.py``; the dashboard lives in the ``reaper_app`` package."""

from reaper_app.main import main

main()
