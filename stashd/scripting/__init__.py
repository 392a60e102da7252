"""Lua scripting as Redis has it (EVAL, EVALSHA, SCRIPT): the sandbox, the script cache."""
