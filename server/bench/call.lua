-- wrk: POST one JSON body to a URL (REST call or MCP tools/call), keep-alive.
--   wrk -t2 -c64 -d15s -s server/bench/call.lua http://127.0.0.1:7070/v1/tools/echo/call
--   MCP=1 wrk ... -s server/bench/call.lua http://127.0.0.1:7070/mcp
-- Statuses (200, 429, other) and error bodies (MCP "isError":true, REST
-- {"error":...}) are counted here and printed at the end; wrk itself
-- prints socket errors (connect, read, write, timeout).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
if os.getenv("MCP") then
  wrk.headers["Accept"] = "application/json, text/event-stream"
  wrk.headers["MCP-Protocol-Version"] = "2026-07-28"
  wrk.headers["Mcp-Method"] = "tools/call"
  wrk.headers["Mcp-Name"] = "echo"
  wrk.body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"msg":"hello"},' ..
    '"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28",' ..
    '"io.modelcontextprotocol/clientInfo":{"name":"wrk","version":"1"},' ..
    '"io.modelcontextprotocol/clientCapabilities":{}}}}'
else
  wrk.body = '{"msg":"hello"}'
end

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end
function init(args)
  bad = 0
  s200 = 0
  s429 = 0
  other = 0
end
function response(status, headers, body)
  if status == 200 then s200 = s200 + 1 elseif status == 429 then s429 = s429 + 1 else other = other + 1 end
  if body and (string.find(body, '"isError":true', 1, true) or string.find(body, '"error":', 1, true)) then
    bad = bad + 1
  end
end
function done(summary, latency, requests)
  local total, ok, busy, odd = 0, 0, 0, 0
  for _, t in ipairs(threads) do
    total = total + t:get("bad")
    ok = ok + t:get("s200")
    busy = busy + t:get("s429")
    odd = odd + t:get("other")
  end
  io.write(string.format("status 200: %d, 429: %d, other: %d; error bodies: %d\n", ok, busy, odd, total))
end
