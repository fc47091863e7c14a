-- wrk script for the nexus benchmarks: POST /v1/messages with a JSON body of a chosen
-- size, and a machine-readable summary line at the end.
--
-- Environment (set by bench/run.sh):
--   BENCH_BODY_BYTES  request body size in bytes (default 300)
--   BENCH_BODY_SHAPE  "chat" (one user turn) or "claude-code" (system blocks, tools,
--                     many turns, as Claude Code sends them); default "chat"
--   BENCH_STREAM      "1" adds "stream":true to the body
--   BENCH_QUERY       query string for the mock upstream, e.g. "?events=30&size=200"
--   BENCH_API_KEYS    comma-separated client keys: wrk thread N sends key N (cycling) as
--                     x-api-key; none by default

local body_bytes = tonumber(os.getenv("BENCH_BODY_BYTES") or "300")
local shape = os.getenv("BENCH_BODY_SHAPE") or "chat"
local stream = os.getenv("BENCH_STREAM") == "1"
local query = os.getenv("BENCH_QUERY") or ""

local filler = "Please look at src/proxy.rs and explain how the response is relayed. "

-- `n` bytes of JSON-safe text.
local function pad(n)
  if n <= 0 then return "" end
  local reps = math.floor(n / #filler) + 1
  return string.sub(string.rep(filler, reps), 1, n)
end

local function build(padding)
  local stream_field = stream and '"stream":true,' or ""
  if shape == "claude-code" then
    -- Two system blocks (so the proxy classifies it as inference), a tool list, a long
    -- conversation whose last user turn carries the padding.
    return '{"model":"claude-sonnet-4-5","max_tokens":32000,' .. stream_field ..
      '"system":[{"type":"text","text":"You are Claude Code, an interactive CLI tool."},' ..
      '{"type":"text","text":"Working directory: /repo","cache_control":{"type":"ephemeral"}}],' ..
      '"tools":[{"name":"Read","description":"Reads a file","input_schema":{"type":"object",' ..
      '"properties":{"file_path":{"type":"string"}},"required":["file_path"]}},' ..
      '{"name":"Bash","description":"Runs a command","input_schema":{"type":"object",' ..
      '"properties":{"command":{"type":"string"}},"required":["command"]}}],' ..
      '"messages":[{"role":"user","content":"Fix the failing test."},' ..
      '{"role":"assistant","content":[{"type":"tool_use","id":"toolu_01","name":"Read","input":{"file_path":"/repo/src/main.rs"}}]},' ..
      '{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_01","content":"' .. padding .. '"}]}]}'
  end
  return '{"model":"claude-sonnet-4-5","max_tokens":1024,' .. stream_field ..
    '"system":"You are a concise assistant.",' ..
    '"messages":[{"role":"user","content":"' .. padding .. '"}]}'
end

local body = build(pad(body_bytes - #build("")))

wrk.method = "POST"
wrk.path = "/v1/messages" .. query
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
wrk.headers["anthropic-version"] = "2023-06-01"
if stream then wrk.headers["Accept"] = "text/event-stream" end

-- One client key per thread, not per request: a request() function would make wrk build
-- every request in Lua, costing the load generator CPU the other targets' runs do not
-- spend (it shares the cores with the proxy). setup() numbers the threads in the main
-- state; each thread's init() runs before wrk formats its one static request.
local api_keys = {}
for key in string.gmatch(os.getenv("BENCH_API_KEYS") or "", "[^,]+") do
  api_keys[#api_keys + 1] = key
end
local threads_set_up = 0

function setup(thread)
  threads_set_up = threads_set_up + 1
  thread:set("bench_thread", threads_set_up)
end

function init(args)
  if #api_keys > 0 then
    wrk.headers["x-api-key"] = api_keys[(bench_thread - 1) % #api_keys + 1]
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d bytes=%d body_bytes=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d " ..
    "err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d\n",
    summary.requests, summary.duration, summary.bytes, #body,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
