-- One route of bench/soak.py at a fixed rate (open loop): wrk calls delay() before each request, and
-- each request takes the next slot of a per-thread schedule, so a slow answer does not slow the sending
-- (up to the connections wrk holds). Latency is measured by wrk from the send.
-- Environment: SOAK_ROUTE (bare | home | product | cart | events), SOAK_RATE (requests/s per thread),
-- SOAK_USERS, SOAK_ITEMS, SOAK_KEY (the events key), SOAK_SEED.
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } soak_timespec;
int clock_gettime(int clk_id, soak_timespec *tp);
]]
local ts = ffi.new("soak_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local route = os.getenv("SOAK_ROUTE")
local interval = 1000 / tonumber(os.getenv("SOAK_RATE"))
local users = tonumber(os.getenv("SOAK_USERS"))
local items = tonumber(os.getenv("SOAK_ITEMS"))
local key = os.getenv("SOAK_KEY") or ""
math.randomseed(tonumber(os.getenv("SOAK_SEED") or "1"))

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

-- per-thread state (globals, so that done() can read them with thread:get)
statuses = {}
fallback = 0
paginated = 0
pages = 0
local next_at = nil
local sent = 0
local cursors = {}
local expecting = 0 -- first pages asked for whose cursor has not come back yet

function delay()
  local t = now_ms()
  if next_at == nil then
    next_at = t
  end
  next_at = next_at + interval
  local d = next_at - t
  if d < 1 then
    return 0 -- behind schedule: send now
  end
  return math.floor(d)
end

local function user()
  return "u" .. math.random(0, users - 1)
end

local function item()
  return "i" .. math.random(0, items - 1)
end

function request()
  sent = sent + 1
  if route == "bare" then
    return wrk.format("GET", "/bare/" .. user())
  elseif route == "home" then
    local c = table.remove(cursors)
    if c then
      pages = pages + 1
      return wrk.format("GET", "/v1/placements/home?user_id=" .. user() .. "&cursor=" .. c)
    end
    if sent % 10 == 0 then
      paginated = paginated + 1
      expecting = expecting + 1
      return wrk.format("GET", "/v1/placements/home?paginate=true&user_id=" .. user())
    end
    return wrk.format("GET", "/v1/placements/home?user_id=" .. user())
  elseif route == "product" then
    return wrk.format("GET", "/v1/placements/product?item_id=" .. item() .. "&user_id=" .. user())
  elseif route == "cart" then
    return wrk.format("GET", "/v1/placements/cart?cart=" .. item() .. "," .. item() .. "&user_id=" .. user())
  elseif route == "events" then
    local u = user()
    local body = string.format(
      '{"user_id":"%s","item_id":"%s","event_type":"view","timestamp":%d,"session_id":"s-%s"}',
      u, item(), os.time(), u
    )
    return wrk.format("POST", "/v1/events", { ["Content-Type"] = "application/json", ["X-API-Key"] = key }, body)
  end
  error("unknown SOAK_ROUTE " .. tostring(route))
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status ~= 200 or route == "bare" or route == "events" then
    return
  end
  if string.find(body, '"source":"fallback"', 1, true) then
    fallback = fallback + 1
  end
  if route == "home" and expecting > 0 then
    local c = string.match(body, '"cursor":"([%w_%-]+)"')
    if c then -- one next page per first page (a next page's own cursor counts too, so never more)
      expecting = expecting - 1
      table.insert(cursors, c)
    end
  end
end

function done(summary, latency, requests)
  local codes, fb, pg, pp = {}, 0, 0, 0
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      codes[status] = (codes[status] or 0) + count
    end
    fb = fb + thread:get("fallback")
    pg = pg + thread:get("paginated")
    pp = pp + thread:get("pages")
  end
  local parts = {}
  for status, count in pairs(codes) do
    table.insert(parts, string.format('"%d":%d', status, count))
  end
  local e = summary.errors
  io.write(string.format(
    'SOAK {"route":"%s","requests":%d,"seconds":%.3f,"p50_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f,' ..
    '"socket_errors":%d,"timeouts":%d,"fallback":%d,"paginated":%d,"next_pages":%d,"statuses":{%s}}\n',
    route, summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, e.connect + e.read + e.write, e.timeout,
    fb, pg, pp, table.concat(parts, ",")
  ))
end
