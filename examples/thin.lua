-- Thin provisioning: a pool over two scratch disks, three volumes larger
-- than the pool itself (blocks are taken only as they are written), and a
-- chain of snapshots, each of the one before, with no COW device to size.
-- The dmsetup commands it stands for are shown beside each step.
-- Usage: dmlua examples/thin.lua [dir]
local dm = require "devmapper"
local dir = arg and arg[1] or os.getenv("TMPDIR") or "/tmp"

local function write(path, text)
  local f = assert(io.open(path, "r+b"))
  f:write(text)
  f:close()
end

local function read(path, n)
  local f = assert(io.open(path, "rb"))
  local s = f:read(n)
  f:close()
  return s
end

do
  local scope <close> = dm.scope()
  local meta = dm.loop.create(dir .. "/thin-meta.img", "4MiB")
  local data = dm.loop.create(dir .. "/thin-data.img", "64MiB")

  -- dmsetup create pool --table "0 131072 thin-pool <meta> <data> 128 0"
  local pool = dm.thin.pool {name = "pool", metadata = meta, data = data, block = "64KiB"}

  -- dmsetup message pool 0 "create_thin 0"; dmsetup create home --table "0 2097152 thin /dev/mapper/pool 0"
  local home = pool:volume("home", "1GiB")
  local var = pool:volume("var", "1GiB")
  local tmp = pool:volume("tmp", "256MiB")
  print(("three volumes of %d MiB in all, on a pool of 64 MiB"):format(
        (home.device:sectors() + var.device:sectors() + tmp.device:sectors()) // 2048))

  write(home.path, "monday")
  -- dmsetup suspend home; dmsetup message pool 0 "create_snap 3 0"; dmsetup resume home
  local monday = home:snapshot("home-monday")
  write(home.path, "tuesday")
  local tuesday = home:snapshot("home-tuesday")
  write(home.path, "wednesday")
  -- a snapshot of a snapshot: as cheap as the first
  local copy = monday:snapshot("home-monday-copy")
  print("home:        " .. read(home.path, 9))
  print("monday:      " .. read(monday.path, 6))
  print("tuesday:     " .. read(tuesday.path, 7))
  print("monday copy: " .. read(copy.path, 6))

  -- dmsetup status pool
  print("pool:        " .. tostring(pool:usage()))
  -- dmsetup remove home-monday-copy; dmsetup message pool 0 "delete 5"
  copy:delete()
end
-- the scope removed the volumes, then the pool, then the loops
print("left behind: " .. #dm.list() .. " devices")
