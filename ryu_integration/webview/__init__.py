"""`coordctl serve`: a live web page and a JSON/HTTP API over any coordination backend.

Modules: `model` (the live view of one backend, kept up to date by the store's own watches and
leader listeners, and the JSON documents built from it), `server` (the aiohttp application:
the page, `/api/*`, and the Server-Sent Events stream `/api/events`). The page and its vendored
JavaScript (cytoscape.js, with its license) live in `static/` and ship as package data: nothing
is fetched from the internet at run time. docs/webview.md describes the API.
"""
