-- What the namespace holds, after forgetting up to ARGV[2] keys expired by ARGV[1] ms:
-- {keys, bytes}.
index_clean(tonumber(ARGV[1]), tonumber(ARGV[2]))
index_save()
return {keys, bytes}
