"""The web interface for people: templates, their view models, the search index.

Served by :mod:`pypicache.web.routes.ui` (``/+ui/...``) and
:mod:`pypicache.web.routes.pages` (``/``). The templates and the static files
(one stylesheet, one optional script, an icon) are package data.
"""
