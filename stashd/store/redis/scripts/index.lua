-- The index's part of every script (the layout is described in stashd.store.redis.layout):
-- KEYS[1..4] are the namespace's index (meta, order, expiry, size), and these functions
-- keep the layout true. index_meta reads meta into locals and index_save writes them
-- back (deleting meta once no key is left; Redis drops the emptied sets itself): every
-- script that may change the index calls it before it returns. index_put indexes a key
-- just written, with its accounted size and its expiry; index_drop forgets a key just
-- deleted; index_forget forgets indexed keys, taking their bytes off the usage;
-- index_over compares the usage plus a growth with limits (the comparison of
-- stashd.store.redis.layout.over); and index_clean forgets up to limit keys expired by
-- now and says how many. CLEAN_PER_CALL comes from Python (stashd.store.redis.lua).
local META, ORDER, EXPIRY, SIZE = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
-- meta, read at most once per call and written back once by index_save.
local seq, keys, bytes, due, meta_read, meta_changed = 0, 0, 0, nil, false, false
local function index_meta()
  if not meta_read then
    local v = redis.call('HMGET', META, 'seq', 'keys', 'bytes', 'due')
    seq, keys, bytes = tonumber(v[1] or 0), tonumber(v[2] or 0), tonumber(v[3] or 0)
    due = v[4] and tonumber(v[4]) or nil
    meta_read = true
  end
end
local function index_save()
  if meta_changed then
    if keys == 0 then
      redis.call('UNLINK', META)  -- nothing left: numbering starts again at 1
      seq, due = 0, nil
    elseif due then
      redis.call('HSET', META, 'seq', seq, 'keys', keys, 'bytes', bytes, 'due', due)
    else
      redis.call('HSET', META, 'seq', seq, 'keys', keys, 'bytes', bytes)
    end
    meta_changed = false
  end
end
local function index_put(member, size, expires_at)
  index_meta()
  local was = redis.call('HGET', SIZE, member)
  if not was then
    seq, keys, bytes = seq + 1, keys + 1, bytes + size
    redis.call('ZADD', ORDER, seq, member)
    redis.call('HSET', SIZE, member, size)
    meta_changed = true
  else
    was = tonumber(was)
    if was ~= size then
      redis.call('HSET', SIZE, member, size)
      bytes = bytes + size - was
      meta_changed = true
    end
  end
  redis.call('ZADD', EXPIRY, expires_at, member)
  if due == nil or expires_at < due then
    due = expires_at
    meta_changed = true
  end
end
local function index_drop(member)
  index_meta()
  local was = redis.call('HGET', SIZE, member)
  if was then
    redis.call('HDEL', SIZE, member)
    redis.call('ZREM', ORDER, member)
    redis.call('ZREM', EXPIRY, member)
    keys, bytes = keys - 1, bytes - tonumber(was)
    meta_changed = true
  end
end
local function index_forget(members)
  index_meta()
  for _, size in ipairs(redis.call('HMGET', SIZE, unpack(members))) do
    if size then
      keys, bytes = keys - 1, bytes - tonumber(size)
    end
  end
  redis.call('HDEL', SIZE, unpack(members))
  redis.call('ZREM', ORDER, unpack(members))
  redis.call('ZREM', EXPIRY, unpack(members))
  meta_changed = true
end
-- True when the namespace's usage plus a growth passes a limit (-1: none); the same
-- comparison as stashd.store.redis.layout.over.
local function index_over(add_keys, add_bytes, max_keys, max_bytes)
  index_meta()
  return (max_keys >= 0 and keys + add_keys > max_keys)
    or (max_bytes >= 0 and bytes + add_bytes > max_bytes)
end
local function index_clean(now, limit)
  index_meta()
  if due == nil or due > now then
    return 0  -- nothing has expired: the common case costs the one read of meta
  end
  local gone = redis.call('ZRANGEBYSCORE', EXPIRY, '-inf', now, 'LIMIT', 0, limit)
  if #gone > 0 then
    index_forget(gone)
  end
  local first = redis.call('ZRANGE', EXPIRY, 0, 0, 'WITHSCORES')
  due = first[2] and tonumber(first[2]) or nil
  meta_changed = true
  return #gone
end
