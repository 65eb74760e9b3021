"""Jinja templates and the stylesheet of the HTML report (package data)."""
