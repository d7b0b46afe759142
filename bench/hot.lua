-- wrk script for the hot-token scenario of bench/scale.py: each wrk thread (one connection each) sends
-- its own bearer token, taken in turn from BENCH_TOKENS (space-separated, from the environment so no
-- value appears in a process listing). One token for all threads: every request hits the same token.
local tokens = {}
for value in string.gmatch(os.getenv("BENCH_TOKENS") or "", "%S+") do
  table.insert(tokens, value)
end
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("index", counter)
end

function init(args)
  wrk.headers["Authorization"] = "Bearer " .. tokens[((index - 1) % #tokens) + 1]
  wrk.headers["User-Agent"] = "portal-bench-hot"
end

done = function(summary, latency, requests)
  io.write(string.format('BENCH {"requests": %d, "duration_us": %d, "non2xx": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, summary.errors.status, latency:percentile(50), latency:percentile(99)))
end
