-- wrk script for bench/bench.py: send one credential header, print one machine-readable line.
-- The credential comes from the environment, so it never appears in a process listing.
local name = os.getenv("BENCH_HEADER")
local value = os.getenv("BENCH_VALUE")
if name ~= nil and name ~= "" then
  wrk.headers[name] = value
end
wrk.headers["User-Agent"] = "portal-bench"

done = function(summary, latency, requests)
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "non2xx": %d, "connect_errors": %d, "read_errors": %d, '
      .. '"write_errors": %d, "timeouts": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.timeout, latency:percentile(50), latency:percentile(99)))
end
