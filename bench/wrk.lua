-- wrk script for bench/run.py. Configured by environment variables (read in every Lua state):
--   BENCH_METHOD, BENCH_BODY, BENCH_CONTENT_TYPE, BENCH_AUTHORIZATION: a fixed request;
--   BENCH_REFRESH_TOKENS (a file, one refresh token a line) and BENCH_THREADS: refresh rotation;
--   BENCH_LOGIN_USERS (N), BENCH_LOGIN_FORMAT (a string.format pattern with one %d, default
--   "bench-%d@example.com") and BENCH_LOGIN_PASSWORD: random logins, POST with a JSON body.
-- In rotation mode every request sends a refresh token that has never been sent before: each
-- wrk thread starts with its share of the seeded tokens, and every 200 answer's new refresh
-- token replaces the one spent. No token is ever replayed, so no request takes the grace path.
-- In random-login mode every request logs in as user i, i drawn uniformly from 1..N in each
-- request (math.random, seeded per thread), so the load touches the whole users table.
-- done() prints one JSON line, prefixed BENCH_RESULT, for the harness to read.

wrk.method = os.getenv("BENCH_METHOD") or "GET"
local body = os.getenv("BENCH_BODY")
if body and body ~= "" then wrk.body = body end
local content_type = os.getenv("BENCH_CONTENT_TYPE")
if content_type and content_type ~= "" then wrk.headers["Content-Type"] = content_type end
local authorization = os.getenv("BENCH_AUTHORIZATION")
if authorization and authorization ~= "" then wrk.headers["Authorization"] = authorization end

local token_file = os.getenv("BENCH_REFRESH_TOKENS")
local counter = 0

function setup(thread)
   thread:set("thread_index", counter)
   counter = counter + 1
end

if token_file and token_file ~= "" then
   local queue, head, tail = {}, 1, 0
   local starved = 0

   function init(args)
      local threads = tonumber(os.getenv("BENCH_THREADS") or "1")
      local index = 0
      for line in io.lines(token_file) do
         if line ~= "" then
            if index % threads == thread_index then
               tail = tail + 1
               queue[tail] = line
            end
            index = index + 1
         end
      end
   end

   function request()
      local token
      if head <= tail then
         token = queue[head]
         queue[head] = nil
         head = head + 1
      else
         -- Every token is in flight or was lost to a failed answer: send a spent one, which
         -- counts as a non-2xx (reuse detected) rather than stalling the connection.
         starved = starved + 1
         token = "starved"
      end
      return wrk.format("POST", nil, {["Authorization"] = "Bearer " .. token}, nil)
   end

   function response(status, headers, body)
      if status == 200 then
         local token = body:match('"refresh_token"%s*:%s*"([^"]+)"')
         if token then
            tail = tail + 1
            queue[tail] = token
         end
      end
   end
end

local login_users = tonumber(os.getenv("BENCH_LOGIN_USERS") or "")
if login_users then
   local format = os.getenv("BENCH_LOGIN_FORMAT") or ""
   if format == "" then format = "bench-%d@example.com" end
   -- Put into the JSON body as is: the harness passes a password that needs no escaping.
   local password = os.getenv("BENCH_LOGIN_PASSWORD") or ""
   local login_headers = {["Content-Type"] = "application/json"}

   function init(args)
      math.randomseed(os.time() * 1000 + thread_index * 7919)
   end

   function request()
      local username = string.format(format, math.random(1, login_users))
      local body = '{"username": "' .. username .. '", "password": "' .. password .. '"}'
      return wrk.format("POST", nil, login_headers, body)
   end
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'BENCH_RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
      '"max_us": %d, "errors_connect": %d, "errors_read": %d, "errors_write": %d, ' ..
      '"errors_status": %d, "errors_timeout": %d}\n',
      summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
      latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
