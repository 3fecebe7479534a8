-- wrk script for the body-echo benchmark: every request is a POST whose body is
-- BENCH_BODY_BYTES bytes (default 1 MiB). Used by benchmarks/loadgen.py.
local size = tonumber(os.getenv("BENCH_BODY_BYTES") or "1048576")
wrk.method = "POST"
wrk.body = string.rep("x", size)
wrk.headers["Content-Type"] = "application/octet-stream"
