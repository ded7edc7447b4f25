"""The desktop front end (PySide6). The only package that imports Qt; it sits on one SiteService.

Entry point: ``modula_desktop.gui.app.run_gui(site_path_or_None)``.
"""
