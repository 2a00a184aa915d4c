"""The route groups; :mod:`pypicache.web.app` registers them all on one Klein app."""
