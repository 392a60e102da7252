-- Check, then write, atomically: what makes a Stash operation atomic on Redis. One call
-- commits a run of operations on one namespace, in order, each on its own: one that
-- fails its check writes nothing and the next is checked against what is there.
-- KEYS[1..4]: the namespace's index; KEYS[5..]: every key the operations read or write
-- (one namespace, so one slot). ARGV[1] = now (ms), ARGV[2] = the length of the
-- namespace's key prefix; then for each operation n, q, w, then n checks as pairs
-- (index into KEYS, the first 25 bytes the key held when the operation read it, ""
-- when absent), q quota decisions as quintuples (F if it fit, O if over; the keys and
-- bytes the operation's writes up to it add; the limits, -1 for none), then w writes
-- as quintuples (index, mode, data, ttl ms, accounted bytes): S stores data, M
-- replaces the header with data and sets the expiry (the value is unchanged), D
-- deletes. Returns one code per operation: 1, all written; 0, a key changed, or 2, a
-- quota decision came out otherwise, and then nothing of it was written.
local now = tonumber(ARGV[1])
local cut = tonumber(ARGV[2]) + 1
index_clean(now, CLEAN_PER_CALL)
local codes = {}
local i = 3
local last = #ARGV
while i <= last do
  local n, q, w = tonumber(ARGV[i]), tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  i = i + 3
  local code = 1
  for _ = 1, n do
    if code == 1 and redis.call('GETRANGE', KEYS[tonumber(ARGV[i])], 0, 24) ~= ARGV[i + 1] then
      code = 0
    end
    i = i + 2
  end
  for _ = 1, q do
    if code == 1 then
      local over = index_over(
        tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4])
      )
      if over ~= (ARGV[i] == 'O') then
        code = 2
      end
    end
    i = i + 5
  end
  if code ~= 1 then
    i = i + 5 * w
  else
    for _ = 1, w do
      local key = KEYS[tonumber(ARGV[i])]
      local mode = ARGV[i + 1]
      local ttl = tonumber(ARGV[i + 3])
      if mode == 'D' or ttl <= 0 then
        redis.call('UNLINK', key)
        index_drop(string.sub(key, cut))
      else
        if mode == 'S' then
          redis.call('SET', key, ARGV[i + 2], 'PX', ttl)
        else
          redis.call('SETRANGE', key, 0, ARGV[i + 2])
          redis.call('PEXPIRE', key, ttl)
        end
        index_put(string.sub(key, cut), tonumber(ARGV[i + 4]), now + ttl)
      end
      i = i + 5
    end
  end
  codes[#codes + 1] = code
end
index_save()
return codes
