"""The MCP door: Stash's memory as tools and resources for agents (Model Context Protocol).

:mod:`stashd.mcp.tools` defines the tools, :mod:`stashd.mcp.server` the server over
stdio (``stash mcp``), and :mod:`stashd.mcp.endpoint` its streamable HTTP endpoint at
``/mcp`` of the daemon's HTTP door.
"""
