-- Check, then write, atomically: what makes a Stash operation atomic on Redis.
-- KEYS[1..4]: the namespace's index; KEYS[5..]: every key the operation read or writes
-- (one namespace, so one slot). ARGV[1] = now (ms), ARGV[2] = the length of the
-- namespace's key prefix, ARGV[3] = n, ARGV[4] = q; then n checks as pairs (index into
-- KEYS, the first 25 bytes the key held when the operation read it, "" when absent),
-- q quota decisions as quintuples (F if it fit, O if over; the keys and bytes the
-- operation's writes up to it add; the limits, -1 for none), then writes as quintuples
-- (index, mode, data, ttl ms, accounted bytes): S stores data, M replaces the header
-- with data and sets the expiry (the value is unchanged), D deletes.
-- 1: all written; 0: a key changed, 2: a quota decision came out otherwise; then
-- nothing was written.
local now = tonumber(ARGV[1])
local cut = tonumber(ARGV[2]) + 1
local i = 5
for _ = 1, tonumber(ARGV[3]) do
  if redis.call('GETRANGE', KEYS[tonumber(ARGV[i])], 0, 24) ~= ARGV[i + 1] then
    return 0
  end
  i = i + 2
end
index_clean(now, CLEAN_PER_CALL)
for _ = 1, tonumber(ARGV[4]) do
  local over = index_over(
    tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4])
  )
  if over ~= (ARGV[i] == 'O') then
    index_save()
    return 2
  end
  i = i + 5
end
while i <= #ARGV do
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
index_save()
return 1
