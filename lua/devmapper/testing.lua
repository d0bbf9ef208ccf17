--- Helpers for busted specs of storage scripts: scratch loop devices, a
-- check after each test that no device, loop or keyring key was left
-- behind, fault devices (error, flakey, delay) to put under the code under
-- test, and a runner for a spec suite in the sandbox VM.
-- @usage
-- local testing = require "devmapper.testing"
-- testing.install()                        -- cleanup and the leftovers check, after each test
-- it("survives a failing disk", function()
--   local disk = testing.loops(1, "8MiB")
--   local bad = testing.fault("error", disk)   -- every I/O fails
--   ...
-- end)
-- @module devmapper.testing
local check = require "devmapper.check"
local core = require "devmapper.core"

local testing = {}

local deferred = {}

--- Run fn after the current test (newest first), even when it failed.
function testing.defer(fn) deferred[#deferred + 1] = fn end

--- Run what was deferred; the errors of cleanups are written to stderr.
function testing.cleanup()
  while #deferred > 0 do
    local ok, err = pcall(table.remove(deferred))
    if not ok then io.stderr:write("cleanup: ", tostring(err), "\n") end
  end
end

local counter = 0

--- A fresh directory under /tmp, removed after the test.
function testing.tmpdir()
  counter = counter + 1
  local dir = ("/tmp/dmtest-%d-%d"):format(math.random(1e9), counter)
  assert(os.execute("mkdir -p " .. dir))
  testing.defer(function() os.execute("rm -rf " .. dir) end)
  return dir
end

--- n loop devices over sparse files of the given size, detached and
-- deleted after the test.
-- @treturn Loop ... one per device
function testing.loops(n, size)
  local dm = require "devmapper"
  local dir = testing.tmpdir()
  local l = {}
  for i = 1, n do l[i] = dm.loop.create(("%s/disk%d"):format(dir, i), size or "2MiB") end
  testing.defer(function() for i = n, 1, -1 do pcall(l[i].remove, l[i]) end end)
  return table.unpack(l)
end

--- A device made for the test, removed after it if the test did not.
function testing.device(name, t, opts)
  local dm = require "devmapper"
  local dev = dm.create(name, t, opts)
  testing.defer(function()
    if dev:info() then
      require("devmapper.device").ensure_resumed(dev.name)
      pcall(dev.remove, dev)
    end
  end)
  return dev
end

local FAULTS = {
  error = function(dm, dev, o) return dm.error(o.length or dm.blockdev(dev).sectors) end,
  flakey = function(dm, dev, o) return dm.flakey {dev, up = o.up or 0, down = o.down or 60, features = o.features} end,
  delay = function(dm, dev, o) return dm.delay {dev, delay = o.delay or 100} end,
}

--- A faulty device over dev for the code under test, removed after the test.
-- @tparam string kind "error" (every I/O fails), "flakey" ({up = 0, down = 60,
--   features = {"drop_writes"} or {"error_writes"}}: fails, or loses or fails
--   writes, in its down time), "delay" ({delay = 100}: milliseconds on every I/O)
-- @param dev a Loop, a Device or a path
-- @tparam[opt] table opts the kind's fields, and name = its device's name
-- @treturn Device
function testing.fault(kind, dev, opts)
  opts = opts or {}
  local make = FAULTS[kind]
  if not make then check.fail("testing.fault", nil, "field 'kind' must be error, flakey or delay, got %s", tostring(kind)) end
  counter = counter + 1
  return testing.device(opts.name or ("test-%s-%d"):format(kind, counter), make(require "devmapper", dev, opts))
end

-- The loops attached now: /dev/loopN -> backing file (from sysfs).
local function loops()
  local out = {}
  for n = 0, 1023 do
    local f = io.open(("/sys/block/loop%d/loop/backing_file"):format(n))
    if f then
      out["/dev/loop" .. n] = f:read("l") or ""
      f:close()
    end
  end
  return out
end

-- The module's keys and keyrings the process can see (/proc/keys).
local function keys()
  local out = {}
  local f = io.open("/proc/keys")
  if not f then return out end
  for line in f:lines() do
    local typ, desc = line:match("^%x+ %S+%s+%d+ %S+ %x+%s+%d+%s+%d+ (%S+)%s+(devmapper:%S+):%s")
    if typ then out[typ .. " " .. desc] = true end
  end
  f:close()
  return out
end

--- What exists now: device-mapper devices, loops, the module's keyring entries.
function testing.state()
  local devices = {}
  local ok, list = pcall(require("devmapper").list)
  for _, d in ipairs(ok and list or {}) do devices[d.name] = true end
  return {devices = devices, loops = loops(), keys = keys()}
end

--- What exists now that did not in `before` (a testing.state()), as lines; empty when nothing.
function testing.leftovers(before)
  local now, out = testing.state(), {}
  for _, kind in ipairs {"devices", "loops", "keys"} do
    local names = {}
    for k, v in pairs(now[kind]) do
      if before[kind][k] == nil then names[#names + 1] = v == true and k or ("%s (%s)"):format(k, v) end
    end
    table.sort(names)
    for _, n in ipairs(names) do out[#out + 1] = kind:sub(1, -2) .. " " .. n end
  end
  return out
end

-- Take away what a test left, so that the next one starts clean.
local function sweep(before)
  local dm = require "devmapper"
  for _ = 1, 3 do
    for name in pairs(testing.state().devices) do
      if not before.devices[name] then pcall(function() dm.device(name):remove {force = true} end) end
    end
  end
  for path in pairs(testing.state().loops) do
    if not before.loops[path] then pcall(function() dm.loop.open(path):detach() end) end
  end
  for k in pairs(testing.state().keys) do
    if not before.keys[k] then
      local desc = k:match("^%S+ (.*)$")
      pcall(core.ring_drop, desc)
      pcall(dm.key.unlink, desc)
    end
  end
end

--- Hook into busted: before each test, what exists is noted; after it,
-- what the test deferred is cleaned up, then a test that left a device,
-- a loop or a keyring key behind fails, naming them (and they are taken
-- away). Call it at the top of a spec file.
function testing.install()
  local busted = require "busted"
  local before
  busted.before_each(function() before = testing.state() end)
  busted.after_each(function()
    testing.cleanup()
    local left = testing.leftovers(before)
    if #left > 0 then
      sweep(before)
      error("left behind: " .. table.concat(left, ", "), 0)
    end
  end)
end

--- Run a spec suite with busted in the sandbox VM (a real device-mapper
-- kernel), as `dmlua --sandbox busted ARGS` does: its exit status.
-- @tparam table args busted's arguments, e.g. {"--tags=kernel", "spec"}
-- @tparam[opt] table opts {udev = true: systemd-udevd in the VM;
--   busted = its path (/usr/bin/busted); dmlua = the interpreter to run it with (dmlua from PATH)}
function testing.sandbox(args, opts)
  opts = opts or {}
  local self = opts.dmlua
  if not self then
    local p = io.popen("command -v dmlua")
    self = p:read("l")
    p:close()
    if not self then check.fail("testing.sandbox", nil, "no dmlua on PATH: give field 'dmlua' (its path)") end
  end
  local argv = {self, opts.busted or "/usr/bin/busted"}
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  return require("devmapper.sandbox").run(argv, {udev = opts.udev})
end

return testing
