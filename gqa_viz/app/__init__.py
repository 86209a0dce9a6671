"""What only the app needs: URL settings, limits, caches, prewarming, one back-end per page.

Imports the library (:mod:`gqa_viz`) and the figures (:mod:`gqa_viz.figures`), never Streamlit.
"""
