-- "tiger": two loop devices striped in 16-sector (8 KiB) chunks.
--   echo "0 8192 striped 2 16 /dev/loop0 0 /dev/loop1 0" | dmsetup create tiger
local dm = require "devmapper"
local dir = arg and arg[1] or os.getenv("TMPDIR") or "/tmp"

do
  local scope <close> = dm.scope()
  local l1 = dm.loop.create(dir .. "/store1", "2MiB")
  local l2 = dm.loop.create(dir .. "/store2", "2MiB")
  local tiger = dm.create("tiger", dm.striped {chunk = 16, l1, l2})
  print("tiger:     " .. tostring(tiger:table()))
end
