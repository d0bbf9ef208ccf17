-- The article's first device: "new", a linear map over a whole loop device.
--   dd if=/dev/zero of=/tmp/store1 bs=1024 count=2048; losetup /dev/loop0 /tmp/store1
--   echo "0 $(blockdev --getsize /dev/loop0) linear /dev/loop0 0" | dmsetup create new
local dm = require "devmapper"
local dir = arg and arg[1] or os.getenv("TMPDIR") or "/tmp"

do
  local scope <close> = dm.scope()            -- undoes everything below on exit
  local l1 = dm.loop.create(dir .. "/store1", "2MiB")
  local new = dm.create("new", dm.linear(l1))
  print("new:       " .. tostring(new:table()))
  print("           " .. new:table():describe())
end
