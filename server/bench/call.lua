-- wrk: POST one JSON body to a URL (REST call or MCP tools/call), keep-alive.
--   wrk -t2 -c64 -d15s -s server/bench/call.lua http://127.0.0.1:7070/v1/tools/echo/call
--   MCP=1 wrk ... -s server/bench/call.lua http://127.0.0.1:7070/mcp
-- Any non-2xx answer is counted by wrk as "Non-2xx"; MCP answers with
-- "isError":true are counted here and printed at the end.
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
end
function response(status, headers, body)
  if body and (string.find(body, '"isError":true', 1, true) or string.find(body, '"error":', 1, true)) then
    bad = bad + 1
  end
end
function done(summary, latency, requests)
  local total = 0
  for _, t in ipairs(threads) do
    total = total + t:get("bad")
  end
  io.write(string.format("error bodies: %d\n", total))
end
