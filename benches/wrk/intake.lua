-- wrk script of the intake benchmark (benches/wrk/run). The scenario comes from the
-- environment: WRK_SCENARIO = healthz | allio | ergonode, plus ALLIO_UUID or
-- ERGONODE_TOKEN. Each request differs (ALLIO ids, Ergonode resource id) as real
-- traffic does. When the run ends it prints one machine-readable RESULT line.

local scenario = os.getenv("WRK_SCENARIO") or "healthz"
local counter = 0

local bodies = {
  allio = function(n)
    return string.format('{"uuid":"%s","command":"RESERVE_ADD","indexes":[%d,%d,%d]}',
      os.getenv("ALLIO_UUID"), n * 3, n * 3 + 1, n * 3 + 2)
  end,
  ergonode = function(n)
    return string.format(
      '{"name":"product_updated","resource_id":{"id":"SKU-%d","type":"sku"},'
        .. '"synchronization":{"resource_customs":null,"events":[]}}', n % 500)
  end,
}

if scenario == "allio" then
  wrk.method = "POST"
elseif scenario == "ergonode" then
  wrk.method = "PUT"
  wrk.headers["X-APP-TOKEN"] = os.getenv("ERGONODE_TOKEN")
end
wrk.headers["content-type"] = "application/json"

function setup(thread)
  thread:set("offset", math.random(1, 1000000000))
end

function request()
  local body = bodies[scenario]
  if not body then
    return wrk.format()
  end
  counter = counter + 1
  return wrk.format(nil, nil, nil, body(offset + counter))
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d seconds=%.3f p50_ms=%.2f p99_ms=%.2f non2xx=%d socket_errors=%d\n",
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, e.status, e.connect + e.read + e.write + e.timeout))
end
