-- bench/ack_load.py's wrk script: each thread sends its own slice of pre-signed requests
-- (one signature each, so none is a replay) and counts statuses and ack bodies.
local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local path = args[1] .. "." .. tostring(id)
  local file = assert(io.open(path, "rb"))
  local data = file:read("*a")
  file:close()
  requests = {}
  for chunk in string.gmatch(data, "(.-)\n%-%-8<%-%-\n") do
    table.insert(requests, chunk)
  end
  index = 0
  exhausted = 0
  ok_empty = 0
  ok_body = 0
  other = 0
end

function request()
  index = index + 1
  if index > #requests then
    exhausted = exhausted + 1
    index = 1
  end
  return requests[index]
end

function response(status, headers, body)
  if status == 200 and (body == nil or #body == 0) then
    ok_empty = ok_empty + 1
  elseif status == 200 then
    ok_body = ok_body + 1
  else
    other = other + 1
  end
end

function done(summary, latency, requests_)
  local totals = {ok_empty = 0, ok_body = 0, other = 0, exhausted = 0, sent = 0}
  for _, thread in ipairs(threads) do
    totals.ok_empty = totals.ok_empty + thread:get("ok_empty")
    totals.ok_body = totals.ok_body + thread:get("ok_body")
    totals.other = totals.other + thread:get("other")
    totals.exhausted = totals.exhausted + thread:get("exhausted")
    totals.sent = totals.sent + thread:get("index")
  end
  io.write(string.format(
    "RESULT {\"requests\": %d, \"duration_us\": %d, \"p50_us\": %d, \"p99_us\": %d, \"max_us\": %d, " ..
    "\"ok_empty\": %d, \"ok_body\": %d, \"other\": %d, \"exhausted\": %d, \"errors\": %d, \"timeouts\": %d}\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    totals.ok_empty, totals.ok_body, totals.other, totals.exhausted,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status,
    summary.errors.timeout))
end
