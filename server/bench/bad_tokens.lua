-- wrk: a REST echo call with a bearer token no client has, a new one for
-- every request (a counter and the thread's address), so that nothing the
-- server could cache repeats.
--   wrk -t2 -c64 -d30s -s server/bench/bad_tokens.lua http://127.0.0.1:7070/v1/tools/echo/call
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"msg":"hello"}'
local n = 0
local me = tostring({}):sub(8)
request = function()
  n = n + 1
  wrk.headers["Authorization"] = "Bearer guess-" .. me .. "-" .. n
  return wrk.format()
end
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) s401 = 0; other = 0 end
function response(status, headers, body)
  if status == 401 then s401 = s401 + 1 else other = other + 1 end
end
function done(summary, latency, requests)
  local a, o = 0, 0
  for _, t in ipairs(threads) do a = a + t:get("s401"); o = o + t:get("other") end
  io.write(string.format("status 401: %d, other: %d\n", a, o))
end
