-- Index entries written before the index existed: KEYS[5..] are entries; ARGV[1] is the
-- prefix's length, then for each entry its first 25 bytes as read, its accounted size
-- and its expiry (ms). An entry already indexed, changed since it was read, or expired
-- by ARGV[2] ms is left alone. Returns how many were indexed.
local cut = tonumber(ARGV[1]) + 1
local now = tonumber(ARGV[2])
local n = 0
local i = 3
for j = 5, #KEYS do
  local member = string.sub(KEYS[j], cut)
  if tonumber(ARGV[i + 2]) > now
    and redis.call('GETRANGE', KEYS[j], 0, 24) == ARGV[i]
    and redis.call('HEXISTS', SIZE, member) == 0 then
    index_put(member, tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]))
    n = n + 1
  end
  i = i + 3
end
index_save()
return n
