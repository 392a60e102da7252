"""The Redis store, by concern: layout, Lua scripts, the plan's view, the plan, the store."""
