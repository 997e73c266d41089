-- wrk script (benchmarks/session_load.py runs it): each request is the next turn of a dialog session that has no
-- turn in flight. The argument is a file of lines "<session id>\t<JSON turn body>", a session's turns in order;
-- the sessions must be at least as many as wrk's connections (each connection holds one turn in flight). The
-- session of an answer is known by its X-Request-Id, which the service echoes. A session that has sent all its
-- turns starts them again, going on from its state. Prints one summary line at the end.
local sessions = {}   -- index -> {id, turns, next}
local free = {}       -- indices of sessions with no turn in flight
local by_id = {}

function init(args)
  for line in io.lines(args[1]) do
    local id, body = line:match("^([^\t]+)\t(.+)$")
    if id then
      local index = by_id[id]
      if not index then
        sessions[#sessions + 1] = {id = id, turns = {}, next = 0}
        index = #sessions
        by_id[id] = index
        free[#free + 1] = index
      end
      local turns = sessions[index].turns
      turns[#turns + 1] = body
    end
  end
end

local calls = 0

function request()
  calls = calls + 1
  local index = calls > 1 and table.remove(free, 1)
  if not index then
    -- wrk's first call in a thread's state only checks that a request can be made (it is never sent); a turn
    -- taken then would hold its session forever. (Also wrk's main state, where init() never ran.)
    return wrk.format("GET", "/healthz")
  end
  local session = sessions[index]
  session.next = session.next % #session.turns + 1
  return wrk.format("POST", "/v1/dialogs/" .. session.id .. "/turns",
                    {["Content-Type"] = "application/json", ["X-Request-Id"] = tostring(index)},
                    session.turns[session.next])
end

function response(status, headers, body)
  local index = tonumber(headers["X-Request-Id"] or headers["x-request-id"] or "")
  if index then free[#free + 1] = index end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK_JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, '
                         .. '"errors": %d, "non_2xx": %d}\n', summary.requests, summary.duration,
                         latency:percentile(50), latency:percentile(90), latency:percentile(99),
                         e.connect + e.read + e.write + e.timeout, e.status))
end
