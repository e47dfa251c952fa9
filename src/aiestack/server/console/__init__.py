"""The web console at ``/``: exchanges, metrics, playground, evals, feedback and prompts.

Server-rendered pages (Jinja2, SVG charts drawn on the server) with a little JavaScript; every
asset is served by aiestack itself. :func:`aiestack.server.console.routes.mount_console` adds it
to an app; login takes the admin key and gives a signed session cookie.
"""
