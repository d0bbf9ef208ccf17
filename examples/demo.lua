-- The demo: the article's workflows, one after another, on the real kernel.
-- Each example cleans up after itself; this checks that nothing is left.
local dm = require "devmapper"
local dir = arg and arg[0] and arg[0]:match("^(.*)/[^/]*$") or "examples"

print(("device-mapper driver %s"):format(dm.version()))
for _, name in ipairs {"new", "half", "onenahalf", "tiger", "crypt", "article", "livecd"} do
  local path = dir .. "/" .. name .. ".lua"
  local f = io.open(path)
  if f then
    f:close()
    print(("-- %s"):format(name))
    dofile(path)
  end
end
local left, loops = dm.list(), 0
for n = 0, 63 do
  local ok, l = pcall(dm.loop.open, "/dev/loop" .. n)
  if ok and l and l.file:match("^/tmp/") then loops = loops + 1 end
end
print(("left behind: %d devices, %d loops"):format(#left, loops))
os.exit(#left == 0 and loops == 0 and 0 or 1)
