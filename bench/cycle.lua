-- Benchmark: N cycles of create + table read + remove of a small device,
-- through the module, through dmsetup (one process per operation, as shell
-- scripts do), and through plain C over libdevmapper (the floor).
-- Run it where device-mapper is: make bench (uses the sandbox VM).
local dm = require "devmapper"
local N = tonumber(arg and arg[1]) or 200

local function now()
  local p = io.popen("date +%s.%N")
  local t = tonumber(p:read("l"))
  p:close()
  return t
end

local function timed(label, f)
  local t0 = now()
  f()
  local dt = now() - t0
  print(("%-28s %8.3f s  %8.0f cycles/s  %7.3f ms/cycle"):format(label, dt, N / dt, 1000 * dt / N))
  return dt
end

print(("%d cycles of create + table + remove (device-mapper %s)"):format(N, dm.version()))

local module = timed("lua-devmapper", function()
  for _ = 1, N do
    local d = dm.create("bench-mod", dm.zero(8))
    assert(tostring(d:table()) == "0 8 zero")
    d:remove()
  end
end)

local floor = timed("C over libdevmapper (floor)", function()
  assert(os.execute("build/bench-floor " .. N))
end)

local dmsetup = timed("dmsetup, 3 processes a cycle", function()
  for _ = 1, N do
    assert(os.execute("DM_DISABLE_UDEV=1 dmsetup create bench-sh --table '0 8 zero' && "
                      .. "DM_DISABLE_UDEV=1 dmsetup table bench-sh >/dev/null && "
                      .. "DM_DISABLE_UDEV=1 dmsetup remove bench-sh"))
  end
end)

print(("module / floor   = %.2fx (1.00 is the floor)"):format(module / floor))
print(("dmsetup / module = %.1fx (how much faster the module is than dmsetup)"):format(dmsetup / module))
