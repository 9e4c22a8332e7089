"""envcal's Streamlit app: ``streamlit run app_streamlit.py`` (or ``envcal ui``).

The app reads and computes nothing itself: pages call :mod:`envcal.views`,
:mod:`envcal.reports` and the actions of :mod:`envcal.ui.actions`.
"""

from envcal.ui.app import main

main()
