"""The HTTP layer: the Klein routes by group, access checks, request limits, forms and file serving.

It translates HTTP to calls on the layers below and their results and errors back
to HTTP; nothing below it knows of requests.
"""
