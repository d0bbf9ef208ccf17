-- "half": only the first half of a loop device.
--   echo "0 2048 linear /dev/loop0 0" | dmsetup create half
local dm = require "devmapper"
local dir = arg and arg[1] or os.getenv("TMPDIR") or "/tmp"

do
  local scope <close> = dm.scope()
  local l1 = dm.loop.create(dir .. "/store1", "2MiB")
  local half = dm.create("half", dm.linear(l1, {length = l1:sectors() // 2}))
  print("half:      " .. tostring(half:table()))
end
