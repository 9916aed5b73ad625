-- wrk script for the small part (benchmarks/small.py): each wrk thread has one connection
-- (`-t N -c N`) and its own Lua state, and works on its own upload, whose path it takes from
-- the file named by TUSD_BENCH_UPLOADS (one path a line, made by the driver before the run).
--
--   TUSD_BENCH_MODE=head    HEAD back to back
--   TUSD_BENCH_MODE=patch   PATCHes of TUSD_BENCH_PATCH_SIZE bytes, each at the Upload-Offset the
--                           last 204 gave; after a failed PATCH a HEAD learns the offset again
--
-- done() prints one JSON line: {"requests", "errors", "seconds", "firstError"}; wrk counts an
-- answer of 400 or more in errors.status, and socket errors and timeouts apart.

local threads = {}
local count = 0

function setup(thread)
  count = count + 1
  local paths = {}
  for line in io.lines(os.getenv("TUSD_BENCH_UPLOADS")) do
    paths[#paths + 1] = line
  end
  thread:set("path", paths[count])
  thread:set("first_error", "")
  threads[#threads + 1] = thread
end

local mode, body, offset, relearn, expected

function init(args)
  mode = os.getenv("TUSD_BENCH_MODE")
  body = string.rep("a", tonumber(os.getenv("TUSD_BENCH_PATCH_SIZE") or "0"))
  offset = 0
  relearn = false
end

local function header(headers, name)
  for key, value in pairs(headers) do
    if string.lower(key) == name then
      return value
    end
  end
  return nil
end

function request()
  if mode == "head" or relearn then
    expected = 200
    return wrk.format("HEAD", path, { ["Tus-Resumable"] = "1.0.0" })
  end
  expected = 204
  return wrk.format("PATCH", path, {
    ["Tus-Resumable"] = "1.0.0",
    ["Upload-Offset"] = tostring(offset),
    ["Content-Type"] = "application/offset+octet-stream",
  }, body)
end

function response(status, headers, text)
  if status ~= expected then
    if first_error == "" then
      first_error = string.format("%s answered %d: %s", expected == 204 and "PATCH" or "HEAD",
        status, string.sub(text or "", 1, 200))
    end
    relearn = mode == "patch"
    return
  end
  if mode == "patch" then
    offset = tonumber(header(headers, "upload-offset")) or offset
    relearn = false
  end
end

local function json_string(text)
  return '"' .. string.gsub(text, '[%c"\\]', function(c)
    return string.format("\\u%04x", string.byte(c))
  end) .. '"'
end

function done(summary, latency, requests)
  local e = summary.errors
  local first = ""
  for _, thread in ipairs(threads) do
    local text = thread:get("first_error")
    if text ~= nil and text ~= "" then
      first = text
      break
    end
  end
  if first == "" and e.connect + e.read + e.write + e.timeout > 0 then
    first = string.format("socket errors: connect %d, read %d, write %d, timeout %d",
      e.connect, e.read, e.write, e.timeout)
  end
  io.write(string.format('{"requests": %d, "errors": %d, "seconds": %.6f, "firstError": %s}\n',
    summary.requests, e.connect + e.read + e.write + e.status + e.timeout,
    summary.duration / 1e6, first == "" and "null" or json_string(first)))
end
