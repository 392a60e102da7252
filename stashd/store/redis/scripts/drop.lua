-- FLUSHDB, a page at a time: delete the entries KEYS[5..] (whose keys are ARGV) and
-- forget them; the call that leaves the order empty deletes the index.
if #ARGV > 0 then
  redis.call('UNLINK', unpack(KEYS, 5))
  index_forget(ARGV)
end
if redis.call('ZCARD', ORDER) == 0 then
  index_meta()
  keys, bytes, meta_changed = 0, 0, true
end
index_save()
return #ARGV
