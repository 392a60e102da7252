"""The HTTP door: JSON requests translated onto the memory service, served by aiohttp.

Where to find what:

- :mod:`stashd.http.server`: :class:`HttpServer`, what the daemon starts and closes;
  aiohttp's low-level server behind the listener shared with RESP.
- :mod:`stashd.http.protocol`: each connection under aiohttp: request deadlines
  (slowloris), half-close, send stalls, the answer to bytes aiohttp cannot parse.
- :mod:`stashd.http.api`: :class:`HttpApi`, routes, API keys, rate limits and one
  handler per endpoint; nothing there decides what data means.
- :mod:`stashd.http.request`: a request's body read within its limits, its JSON
  fields, ``If-Match`` and query parameters checked.
- :mod:`stashd.http.errors`: the error table, each StashError as a status and JSON.
- :mod:`stashd.http.answer`: how responses and closing answers are built.
"""
