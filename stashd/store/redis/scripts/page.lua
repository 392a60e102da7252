-- A page of the namespace in key order: up to ARGV[3] keys after sequence number ARGV[2]
-- (key, number, key, number...), once keys expired by ARGV[1] ms are forgotten.
index_clean(tonumber(ARGV[1]), CLEAN_PER_CALL)
index_save()
return redis.call('ZRANGEBYSCORE', ORDER, '(' .. ARGV[2], '+inf', 'WITHSCORES', 'LIMIT', 0, ARGV[3])
