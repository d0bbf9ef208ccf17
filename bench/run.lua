-- Benchmark (make bench, in the sandbox VM): each device-mapper operation
-- timed on its own, through the module, through plain C over libdevmapper
-- (the floor, bench/floor.c) and through dmsetup, interleaved round by round
-- so that the ratios hold on a noisy machine; the ioctls each makes per
-- operation (counted with strace); then stacks of N members (apply,
-- re-apply, teardown, dm.cleanup) per member against the floor.
-- Usage: dmlua bench/run.lua [n = 100] [rounds = 5] [scale = "10,100,1000"]
local dm = require "devmapper"
local core = require "devmapper.core"

local N = math.tointeger(tonumber(arg[1] or "")) or 100 -- (or "--ioctls", k: one batch of k)
local ROUNDS = math.tointeger(tonumber(arg[2] or "")) or 5
local SCALE = {}
for s in (arg[3] or "10,100,1000"):gmatch("%d+") do SCALE[#SCALE + 1] = math.tointeger(tonumber(s)) end
local FLOOR = "build/bench-floor"
local NDMSETUP = math.max(5, N // 10)    -- dmsetup forks a process per step: fewer of them
local OPS = {"create", "table", "suspend+resume", "reload", "remove"}
dm.kernel.warn = function(m) io.stderr:write("warning: ", m, "\n") end

local function sh(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  assert(p:close(), "failed: " .. cmd)
  return out
end

local function mark(op) local f = io.open("/bench-marker-" .. op) if f then f:close() end end

local scope <close> = dm.scope()
local store = os.tmpname()
os.remove(store)
local loop = dm.loop.create(store, "32MiB")
local devno = loop:devno()

local function slice(i, shift) return dm.linear(loop, {offset = 8 * i + (shift or 0), length = 8}) end

-- One batch per operation over n devices: seconds per device, by operation.
local module = {}
function module.ops(n)
  local t, devs = {}, {}
  local function batch(op, step)
    mark(op)
    local t0 = core.monotonic()
    for i = 1, n do step(i) end
    t[op] = (core.monotonic() - t0) / n
  end
  batch("create", function(i) devs[i] = dm.create("bench-m" .. i, slice(i)) end)
  batch("table", function(i) devs[i]:table() end)
  batch("suspend+resume", function(i) devs[i]:suspend() devs[i]:resume() end)
  batch("reload", function(i) devs[i]:reload(slice(i, 8192)) end)
  batch("remove", function(i) devs[i]:remove() end)
  return t
end

local function floor_run(kind, n)
  local t = {}
  for op, ns in sh(("%s %s %d %s"):format(FLOOR, kind, n, devno)):gmatch("(%S+) (%d+)") do t[op] = tonumber(ns) / 1e9 end
  return t
end

local function dmsetup_ops(n)
  local t = {}
  local function batch(op, cmd)
    local lines = {}
    for i = 1, n do lines[i] = cmd(i) end
    local t0 = core.monotonic()
    sh("set -e\n" .. table.concat(lines, "\n"))
    t[op] = (core.monotonic() - t0) / n
  end
  local D = "DM_DISABLE_UDEV=1 dmsetup "
  if require("devmapper.core").dm_udev() then D = "dmsetup " end
  batch("create", function(i) return ("%screate bench-s%d --table '0 8 linear %s %d'"):format(D, i, devno, 8 * i) end)
  batch("table", function(i) return ("%stable bench-s%d >/dev/null"):format(D, i) end)
  batch("suspend+resume", function(i) return ("%ssuspend bench-s%d && %sresume bench-s%d"):format(D, i, D, i) end)
  batch("reload", function(i)
    return ("%sload bench-s%d --table '0 8 linear %s %d' && %ssuspend bench-s%d && %sresume bench-s%d")
           :format(D, i, devno, 8 * i + 8192, D, i, D, i)
  end)
  batch("remove", function(i) return ("%sremove bench-s%d"):format(D, i) end)
  return t
end

local function median(xs)
  table.sort(xs)
  local m = #xs // 2
  return #xs % 2 == 1 and xs[m + 1] or (xs[m] + xs[m + 1]) / 2
end

local function ms(s) return ("%8.2f ms"):format(s * 1000) end

---------------------------------------------------------------------------
dm.version() -- libdevmapper's first task checks the driver version: not part of any operation
if arg[1] == "--ioctls" then   -- one batch, for strace to count
  module.ops(math.tointeger(tonumber(arg[2])))
  mark("end")
  return
end

print(("device-mapper %s; %d devices per batch (dmsetup %d), median of %d interleaved rounds")
      :format(dm.version(), N, NDMSETUP, ROUNDS))
local runs = {module = {}, floor = {}, dmsetup = {}}
for r = 1, ROUNDS do
  runs.module[r] = module.ops(N)
  runs.floor[r] = floor_run("ops", N)
  runs.dmsetup[r] = dmsetup_ops(NDMSETUP)
end

-- ioctls per operation, from strace: one small batch of each, between markers
local function ioctls(cmd)
  local trace = os.tmpname()
  sh(("strace -f -qq -e trace=ioctl,open,openat -o %s %s >/dev/null"):format(trace, cmd))
  local count, op = {}, nil
  for line in io.lines(trace) do
    op = line:match("/bench%-marker%-([%w+%-]+)") or op
    if op and line:find("ioctl%(%d+, DM_") then count[op] = (count[op] or 0) + 1 end
  end
  os.remove(trace)
  return count
end
local K = 10
local calls = {
  module = ioctls(("%s bench/run.lua --ioctls %d"):format(arg[-1], K)),
  floor = ioctls(("%s ops %d %s"):format(FLOOR, K, devno)),
}

print(("\n%-16s %11s %11s %11s %9s %9s   %s"):format("operation", "module", "floor", "dmsetup", "mod/floor",
                                                    "dms/mod", "ioctls: module floor"))
for _, op in ipairs(OPS) do
  local m, f, d = {}, {}, {}
  for r = 1, ROUNDS do m[r], f[r], d[r] = runs.module[r][op], runs.floor[r][op], runs.dmsetup[r][op] end
  m, f, d = median(m), median(f), median(d)
  print(("%-16s %s %s %s %8.2fx %8.1fx   %6.1f %5.1f"):format(op, ms(m), ms(f), ms(d), m / f, d / m,
        (calls.module[op] or 0) / K, (calls.floor[op] or 0) / K))
end

-- each crypt member its own key, as on a host full of encrypted volumes
local keys = setmetatable({}, {__index = function(t, i) t[i] = dm.key.random(64) return t[i] end})
local key = keys[0]

---------------------------------------------------------------------------
-- Keyring bookkeeping per device with n device rings in the user keyring
-- (each with a key of its own, as n crypt devices have): a create's ring
-- and key, a reload's listing of the ring, and a key linked and unlinked.
-- Each should cost the same at any n.
print("\nkeyring bookkeeping per device, with N device rings in @u")
print(("%5s %14s %14s %14s"):format("N", "ring+key", "list ring", "link+unlink"))
do
  local made, first = 0, nil
  local k = dm.key.random(64)
  local function each(reps, f)
    local t0 = core.monotonic()
    for i = 1, reps do f(i) end
    return (core.monotonic() - t0) / reps
  end
  for _, n in ipairs(SCALE) do
    while made < n do
      made = made + 1
      core.ring_add("devmapper:dev:bkr" .. made, "devmapper:bkrkey" .. made, keys[made], true)
      core.ring_release()
    end
    local r = {
      each(100, function(i)
        core.ring_add("devmapper:dev:bkx" .. i, "devmapper:bkx", k, true)
        core.ring_release()
        core.ring_drop("devmapper:dev:bkx" .. i)
      end),
      each(100, function(i) core.ring_keys("devmapper:dev:bkr" .. (i % n + 1)) end),
      each(100, function(i)
        local ring = "devmapper:dev:bkr" .. (i % n + 1)
        core.ring_add(ring, "devmapper:bkx", k)
        core.ring_release()
        core.ring_unlink(ring, "devmapper:bkx")
      end),
    }
    first = first or r
    local function us(x) return ("%11.1f us"):format(x * 1e6) end
    print(("%5d %s %s %s   (%.2fx %.2fx %.2fx the cost at N = %d)"):format(n, us(r[1]), us(r[2]), us(r[3]),
          r[1] / first[1], r[2] / first[2], r[3] / first[3], SCALE[1]))
  end
  for i = 1, made do core.ring_drop("devmapper:dev:bkr" .. i) end
end

---------------------------------------------------------------------------
-- Stacks of n members (8-sector slices of the loop, linear or crypt): apply,
-- re-apply (nothing to do), teardown, and dm.cleanup of an applied stack,
-- per member, against the floor's creates, info + table reads and removes.
local function stack_of(n, crypt)
  local def = {prefix = "bst"}
  for i = 1, n do
    def["m" .. i] = crypt and dm.crypt {loop, offset = 8 * i, length = 8, key = keys[i]} or slice(i)
  end
  return dm.stack(def)
end

local function timed(f)
  local t0 = core.monotonic()
  f()
  return core.monotonic() - t0
end

-- Small stacks run several times (the median of each step): at least 100
-- members in all, so that N = 10 is no noisier than N = 100.
local function scale(n, crypt)
  local runs, fruns = {}, {}
  for r = 1, math.max(1, 100 // n) do
    local s = stack_of(n, crypt)
    local t = {}
    t.apply = timed(function() s:apply() end) / n
    t["re-apply"] = timed(function() s:apply() end) / n
    t.teardown = timed(function() s:teardown() end) / n
    s:apply()
    t.cleanup = timed(function() dm.cleanup("bst") end) / n
    runs[r] = t
    fruns[r] = floor_run(crypt and "crypt" or "stack", n)
    fruns[r].cleanup = fruns[r].teardown
  end
  local t, f = {}, {}
  for step in pairs(runs[1]) do
    local m, fl = {}, {}
    for r = 1, #runs do m[r], fl[r] = runs[r][step], fruns[r][step] end
    t[step], f[step] = median(m), median(fl)
  end
  return t, f
end

-- dm-crypt and its cipher load on first use: not part of any step
dm.create("bench-warm", dm.crypt {loop, length = 8, key = key}):remove()

print("\nstacks, per member")
print(("%-6s %5s %-9s %11s %11s %9s"):format("kind", "N", "step", "module", "floor", "mod/floor"))
local first = {}
for _, crypt in ipairs {false, true} do
  for _, n in ipairs(SCALE) do
    local t, f = scale(n, crypt)
    for _, step in ipairs {"apply", "re-apply", "teardown", "cleanup"} do
      local kind = crypt and "crypt" or "linear"
      first[kind .. step] = first[kind .. step] or t[step]
      print(("%-6s %5d %-9s %s %s %8.2fx   (%.2fx the per-member cost at N = %d)"):format(kind, n, step, ms(t[step]),
            ms(f[step]), t[step] / f[step], t[step] / first[kind .. step], SCALE[1]))
    end
  end
end
