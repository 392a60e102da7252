-- Builds the sandbox user scripts run in, once per Lua runtime, from the full standard
-- library and the Python callbacks stashd hands it; returns the functions Python calls.
-- Everything a user script could use to leave the sandbox (debug, io, os, require,
-- loadfile, bytecode loading, the runtime's `python` table) stays in this chunk's locals.
local py_call, py_pcall, py_log, py_sha1, py_check, py_setresp, version, version_num = ...

local debug_sethook, debug_getinfo = debug.sethook, debug.getinfo
local error, type, tostring, select, pairs, rawget = error, type, tostring, select, pairs, rawget
local setmetatable, setfenv, loadstring, xpcall = setmetatable, setfenv, loadstring, xpcall
local string_sub, string_byte, collectgarbage = string.sub, string.byte, collectgarbage

-- Raised from the hook once the time limit is reached: Python, not the script, decides the
-- reply then; a script that catches it with pcall only meets it again at its next
-- instruction (the hook then runs at every one).
local STOP = setmetatable({}, { __metatable = false })

local function readonly_error()
  error("Attempt to modify a readonly table", 2)
end

-- A read-only view of a table: reads go through, writes are refused as Redis 7 refuses them.
local function readonly(t)
  return setmetatable({}, { __index = t, __newindex = readonly_error, __metatable = false })
end

-- Strings keep their methods ("x"):upper(), but their metatable cannot be reached.
getmetatable("").__metatable = false

local base = {}
local G = setmetatable({}, {
  __index = function(_, name)
    local value = base[name]
    if value == nil then
      error("Script attempted to access nonexistent global variable '" .. tostring(name) .. "'", 2)
    end
    return value
  end,
  __newindex = readonly_error,
  __metatable = false,
})

-- Text only: a binary chunk (it starts with ESC) could break the interpreter's invariants.
local function text_loadstring(text, name)
  if type(text) == "string" and string_byte(text, 1) == 27 then
    return nil, "loading binary chunks is not allowed"
  end
  local fn, err = loadstring(text, name)
  if fn then
    setfenv(fn, G)
  end
  return fn, err
end

local function text_load(reader, name)
  if type(reader) == "string" then
    return text_loadstring(reader, name)
  end
  local parts = {}
  while true do
    local part = reader()
    if part == nil or part == "" then
      break
    end
    parts[#parts + 1] = part
  end
  return text_loadstring(table.concat(parts), name)
end

local redis = {
  -- Python's own callables, not Lua wrappers: a script's `return redis.call(...)` is then
  -- no tail call that would hide the script's line from the error handler.
  call = py_call,
  pcall = py_pcall,
  error_reply = function(message)
    if type(message) ~= "string" then
      error("wrong number or type of arguments", 0)
    end
    if string_sub(message, 1, 1) == "-" then
      message = string_sub(message, 2)
      -- Redis drops the dash and, where no code is left, says ERR.
      if not message:find(" ", 1, true) then
        message = "ERR " .. message
      end
    elseif message == "" or not message:find(" ", 1, true) then
      message = "ERR " .. message
    end
    return { err = message }
  end,
  status_reply = function(message)
    if type(message) ~= "string" then
      error("wrong number or type of arguments", 0)
    end
    return { ok = message }
  end,
  sha1hex = function(...)
    if select("#", ...) ~= 1 then
      error("wrong number of arguments", 0)
    end
    local text = ...
    if type(text) == "number" then
      text = tostring(text)
    elseif type(text) ~= "string" then
      error("wrong number of arguments", 0)
    end
    return py_sha1(text)
  end,
  log = function(...)
    local n = select("#", ...)
    if n < 2 then
      error("redis.log() requires two arguments or more.", 0)
    end
    local level = ...
    if type(level) ~= "number" or level < 0 or level > 3 then
      error("Invalid debug level.", 0)
    end
    local words = {}
    for i = 2, n do
      words[#words + 1] = tostring((select(i, ...)))
    end
    py_log(level, table.concat(words, " "))
  end,
  setresp = function(...)
    local proto = ...
    if select("#", ...) ~= 1 or (proto ~= 2 and proto ~= 3) then
      error("RESP version must be 2 or 3.", 0)
    end
    py_setresp(proto)
  end,
  LOG_DEBUG = 0,
  LOG_VERBOSE = 1,
  LOG_NOTICE = 2,
  LOG_WARNING = 3,
  REDIS_VERSION = version,
  REDIS_VERSION_NUM = version_num,
}

for _, name in pairs({
  "assert", "error", "getmetatable", "ipairs", "next", "pairs", "pcall", "rawequal",
  "rawget", "rawset", "select", "setmetatable", "tonumber", "tostring", "type", "unpack",
  "xpcall", "gcinfo", "collectgarbage", "_VERSION",
}) do
  base[name] = _G[name]
end
base.loadstring = text_loadstring
base.load = text_load
base.coroutine = readonly(coroutine)
base.math = readonly(math)
base.string = readonly(string)
base.table = readonly(table)
base.redis = readonly(redis)
base._G = G

-- Frames are searched for the user's own chunk, since the error may come from a C
-- function (error) or from redis.call's wrapper above it; the handler stops the time
-- limit's hook first, so the handler itself always finishes.
local function handler(err)
  debug_sethook()
  if err == STOP then
    return STOP
  end
  local line = -1
  for level = 2, 64 do
    local info = debug_getinfo(level, "Sl")
    if info == nil then
      break
    end
    if info.source == "@user_script" then
      line = info.currentline
      break
    end
  end
  if type(err) == "userdata" then
    -- redis.call's failure, raised in Python: its text is the command's error line.
    return { err = tostring(err), line = line }
  end
  if type(err) == "table" then
    local text = rawget(err, "err")
    if type(text) == "string" then
      return { err = text, line = line }
    end
    return { err = "ERR unknown error", line = line }
  end
  return { err = "ERR " .. tostring(err), line = line }
end

local function hook()
  if py_check() then
    debug_sethook(hook, "", 1)
    error(STOP, 0)
  end
end

local function compile(source)
  local fn, err = loadstring(source, "@user_script")
  if fn == nil then
    return nil, err
  end
  setfenv(fn, G)
  return fn, nil
end

-- Runs one script; ok is true with its result, false with the handler's error table or
-- STOP. The hook stays on for Python's reading of the result (a table's metamethods run
-- then), until stop() is called.
local function run(fn, keys, argv, every)
  base.KEYS = keys
  base.ARGV = argv
  debug_sethook(hook, "", every)
  local ok, result = xpcall(fn, handler)
  return ok, result
end

local function stop()
  debug_sethook()
  base.KEYS = nil
  base.ARGV = nil
end

local function is_stop(value)
  return value == STOP
end

local function collect()
  collectgarbage("collect")
end

-- Nothing of the runtime's own globals is reachable from a script's environment; these
-- go too, so no other chunk run in this runtime finds them either.
debug, io, os, package, require, dofile, loadfile, python = nil, nil, nil, nil, nil, nil, nil, nil

return compile, run, stop, is_stop, collect
