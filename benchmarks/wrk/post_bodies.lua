-- wrk script (benchmarks/wrk_load.py runs it): with a file argument, POST its lines (one JSON body each) in turn
-- to wrk's URL, each thread from its own offset; without one, wrk's plain GET. Prints one summary line at the end.
--   wrk -t1 -c16 -d20s -s benchmarks/wrk/post_bodies.lua http://127.0.0.1:8000/v1/models/pos:tag -- bodies.jsonl
local bodies = {}
local position = 0

function init(args)
  if args[1] then
    for line in io.lines(args[1]) do
      if #line > 0 then bodies[#bodies + 1] = line end
    end
    position = tonumber(args[2] or "0") or 0
  end
end

function request()
  if #bodies == 0 then
    return wrk.format(nil)
  end
  position = position % #bodies + 1
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, bodies[position])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK_JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, '
                         .. '"errors": %d, "non_2xx": %d}\n', summary.requests, summary.duration,
                         latency:percentile(50), latency:percentile(90), latency:percentile(99),
                         e.connect + e.read + e.write + e.timeout, e.status))
end
