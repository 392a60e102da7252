-- wrk script for the http suite: POST /stash with the same small JSON body every time.
wrk.method = "POST"
wrk.body = '{"data": {"task": "summarize", "context": "benchmark"}, "ttl": 600}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-API-KEY"] = "bench-key"
