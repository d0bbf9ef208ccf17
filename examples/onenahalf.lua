-- "onenahalf": the second half of one loop spliced to the whole of another.
--   echo "0 2048 linear /dev/loop0 2048
--   2048 4096 linear /dev/loop1 0" | dmsetup create onenahalf
local dm = require "devmapper"
local dir = arg and arg[1] or os.getenv("TMPDIR") or "/tmp"

do
  local scope <close> = dm.scope()
  local l1 = dm.loop.create(dir .. "/store1", "2MiB")
  local l2 = dm.loop.create(dir .. "/store2", "2MiB")
  local dev = dm.create("onenahalf", dm.table {
    dm.linear(l1, {offset = l1:sectors() // 2}),   -- rest of l1 from its middle
    dm.linear(l2),                                 -- all of l2
  })
  print("onenahalf: " .. tostring(dev:table()):gsub("\n", "\n           "))
  print(("           %d sectors = 1.5 x %d"):format(dev:sectors(), l1:sectors()))
end
