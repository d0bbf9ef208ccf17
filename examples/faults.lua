-- A filesystem on a disk that misbehaves on demand, the way filesystem test
-- suites use dm-flakey and dm-delay: an ext4 filesystem over a delay device
-- (its writes held back 200 ms) over a flakey device. Then the disk "loses
-- power": flakey's drop_writes acknowledges every write and keeps none, so
-- a file written and synced is gone after a remount (the journal brings the
-- filesystem back to its last commit). Then the disk fails its writes
-- (error_writes) and fsync says so. Each change is a reload of the flakey
-- table with changed fields (dev:reconfigure), as dmsetup reload would do.
-- Usage: dmlua examples/faults.lua [dir]
local dm = require "devmapper"
local core = require "devmapper.core"
local dir = arg and arg[1] or os.getenv("TMPDIR") or "/tmp"

local function sh(fmt, ...)
  local cmd = fmt:format(...)
  assert(os.execute(cmd), "failed: " .. cmd)
end

local function put(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return os.execute("sync " .. path .. " 2>/dev/null") -- fsync: true if the disk took it
end

local function exists(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end

do
  local scope <close> = dm.scope()
  local disk = dm.loop.create(dir .. "/faults.img", "64MiB")
  local mnt = dir .. "/faults.mnt"
  sh("mkdir -p %s", mnt)
  local unmount <close> = setmetatable({}, {__close = function() os.execute("umount " .. mnt .. " 2>/dev/null") end})

  -- flakey (up: passes everything) under delay (writes and flushes 200 ms late)
  local s = dm.stack {
    prefix = "faults",
    flaky = dm.flakey {disk, up = 3600, down = 0},
    slow = dm.delay {"flaky", delay = 0, write = {"flaky", delay = 200}},
  }
  s:apply()
  local flaky, slow = s:device("flaky"), s:device("slow")
  print("flaky: " .. tostring(flaky:table()))
  print("slow:  " .. tostring(slow:table()))

  sh("mkfs.ext4 -q %s && mount %s %s", slow.path, slow.path, mnt)
  local t0 = core.monotonic()
  assert(put(mnt .. "/kept.txt", "written while the disk worked\n"))
  print(("synced kept.txt in %.2f s (writes are held back 200 ms)"):format(core.monotonic() - t0))

  -- power loss: writes acknowledged and dropped
  flaky:reconfigure {up = 0, down = 3600, features = {"drop_writes"}}
  print("flaky: " .. tostring(flaky:table()))
  print("lost.txt synced: " .. tostring(put(mnt .. "/lost.txt", "this never reaches the disk\n") == true))
  sh("umount %s", mnt)
  flaky:reconfigure {up = 3600, down = 0, features = {}}
  sh("mount %s %s", slow.path, mnt)
  print("after remount: kept.txt " .. (exists(mnt .. "/kept.txt") and "present" or "MISSING")
        .. ", lost.txt " .. (exists(mnt .. "/lost.txt") and "PRESENT" or "gone"))

  -- a disk that fails its writes: fsync reports it
  flaky:reconfigure {up = 0, down = 3600, features = {"error_writes"}}
  print("failing.txt synced: " .. tostring(put(mnt .. "/failing.txt", "the disk refuses this\n") == true))
  os.execute("umount " .. mnt .. " 2>/dev/null")
  flaky:reconfigure {up = 3600, down = 0, features = {}}
  s:teardown()
  os.remove(mnt)
end
