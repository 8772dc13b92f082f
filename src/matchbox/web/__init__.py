"""The dashboard: a page and its static files, served by the API at ``/`` and ``/static``.

Nothing here imports the rest of Matchbox: the page talks to the API over HTTP and WebSocket
like any other client. Its charting library is fetched at build time by ``vendor``.
"""
