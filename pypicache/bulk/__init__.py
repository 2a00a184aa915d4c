"""Bulk caching: requirements parsing, targets, resolution, jobs and reports."""
