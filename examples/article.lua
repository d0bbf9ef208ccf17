-- The whole of "Right To Your Own Devices" (Linux Gazette 114), step by step:
-- loops, linear and striped maps, a base device with a mounted filesystem, a
-- live snapshot for a backup while the data keeps changing (Point B), the
-- mounted device made volatile in place (Point A), and dm-crypt. Each step
-- prints what it made; the scope undoes everything at the end.
local dm = require "devmapper"
local dir = arg and arg[1] or os.getenv("TMPDIR") or "/tmp"

local function say(fmt, ...) print("\n== " .. fmt:format(...)) end

local function show(name, dev)
  local t = tostring(dev:table()):gsub("\n", "\n" .. (" "):rep(13))
  print(("  %-10s %s"):format(name .. ":", t))
end

-- A program writing and reading a 32-byte record.
local function put(path, offset, s)
  local f = assert(io.open(path, "r+b"))
  f:seek("set", offset)
  f:write(s .. ("\0"):rep(32 - #s))
  f:close()
end

local function get(path, offset, n)
  local f = assert(io.open(path, "rb"))
  f:seek("set", offset)
  local s = f:read(n)
  f:close()
  return (s:gsub("%z+$", ""))
end

-- Files on the mounted filesystem, and the commands the article runs around it.
local function write(path, s)
  local f = assert(io.open(path, "w"))
  f:write(s)
  f:close()
  os.execute("sync")
end

local function read(path)
  local f = assert(io.open(path))
  local s = f:read("a")
  f:close()
  return s
end

local function sh(fmt, ...)
  local cmd = fmt:format(...)
  assert(os.execute(cmd), "failed: " .. cmd)
end

do
  local scope <close> = dm.scope()

  say "How To Fake It With A Loop"
  --   dd if=/dev/zero of=/tmp/store1 bs=1024 count=2048; losetup /dev/loop0 /tmp/store1
  local l1 = dm.loop.create(dir .. "/store1", "2MiB")
  local l2 = dm.loop.create(dir .. "/store2", "2MiB")
  for _, l in ipairs {l1, l2} do print(("  %s over %s: %d sectors"):format(l.path, l.file, l:sectors())) end

  say "linear: 'new' is all of the first loop"
  --   echo "0 $(blockdev --getsize /dev/loop0) linear /dev/loop0 0" | dmsetup create new
  local new = dm.create("new", dm.linear(l1))
  show("new", new)
  new:remove()

  say "linear: 'half' is its first half"
  --   echo "0 2048 linear /dev/loop0 0" | dmsetup create half
  local half = dm.create("half", dm.linear(l1, {length = l1:sectors() // 2}))
  show("half", half)
  half:remove()

  say "linear: 'onenahalf' is the second half of one loop, then all of the other"
  local onenahalf = dm.create("onenahalf", dm.table {dm.linear(l1, {offset = l1:sectors() // 2}), dm.linear(l2)})
  show("onenahalf", onenahalf)
  onenahalf:remove()

  say "striped: 'tiger' takes 16-sector chunks from each loop in turn"
  --   echo "0 8192 striped 2 16 /dev/loop0 0 /dev/loop1 0" | dmsetup create tiger
  local tiger = dm.create("tiger", dm.striped {chunk = 16, l1, l2})
  show("tiger", tiger)
  tiger:remove()

  say "'base': both loops end to end, with a filesystem holding the data we care about"
  local base = dm.create("base", dm.table {dm.linear(l1), dm.linear(l2)})
  show("base", base)
  local mnt, snapmnt = dir .. "/mnt", dir .. "/snapmnt"
  -- whatever happens, the filesystems are unmounted before the scope undoes the devices
  local unmount <close> = setmetatable({}, {__close = function()
    os.execute(("umount %s %s 2>/dev/null"):format(mnt, snapmnt))
  end})
  sh("mkfs.ext2 -q %s && mkdir -p %s %s && mount %s %s", base.path, mnt, snapmnt, base.path, mnt)
  write(mnt .. "/report.txt", "version 1")
  print("  report.txt on base: " .. read(mnt .. "/report.txt"))

  say "Point B: a live snapshot, for a backup while the data keeps changing"
  --   dmsetup table base | dmsetup create base-real
  --   echo "0 8192 snapshot /dev/mapper/base-real /dev/loop2 P 8" | dmsetup create base-snap
  --   echo "0 8192 snapshot-origin /dev/mapper/base-real" | dmsetup load base
  --   dmsetup suspend base; dmsetup resume base      -- "quickly (say with a script)"
  local l3 = dm.loop.create(dir .. "/cow1", "2MiB")
  local snap = dm.snapshot.take(base, {cow = l3, chunk = 8})
  show("base", base)
  show("base-real", snap.real)
  show("base-snap", snap.view)
  for v = 2, 4 do write(mnt .. "/report.txt", "version " .. v) end   -- the applications keep writing
  sh("mount -o ro %s %s", snap.view.path, snapmnt)
  print("  report.txt on base:      " .. read(mnt .. "/report.txt"))
  print("  report.txt on base-snap: " .. read(snapmnt .. "/report.txt") .. "   (back it up from here)")
  sh("umount %s", snapmnt)
  print("  COW use: " .. tostring(snap:usage()))
  --   echo "0 8192 linear ..." (base-real's table) | dmsetup load base
  --   dmsetup suspend base; dmsetup resume base; dmsetup remove base-snap; dmsetup remove base-real
  snap:release()
  show("base", base)

  say "Point A: the mounted base becomes volatile in place; writes go to the COW"
  --   dmsetup table base | dmsetup create basedup
  --   echo "0 8192 snapshot /dev/mapper/basedup /dev/loop3 P 8" | dmsetup load base
  --   dmsetup suspend base; dmsetup resume base
  local l4 = dm.loop.create(dir .. "/cow2", "2MiB")
  local ov = dm.snapshot.volatile(base, {cow = l4})
  show("base", base)
  show("base-real", ov.real)
  write(mnt .. "/experiment.txt", "an experiment")
  print("  experiment.txt on base: " .. read(mnt .. "/experiment.txt") .. "; COW use: " .. tostring(ov:usage()))
  sh("umount %s", mnt)                               -- discard needs it closed
  ov:discard()
  sh("mount %s %s", base.path, mnt)
  print("  discarded; experiment.txt exists: " .. tostring(io.open(mnt .. "/experiment.txt") ~= nil))
  ov = dm.snapshot.volatile(base, {cow = l4})
  write(mnt .. "/report.txt", "final")
  ov:commit()                                        -- snapshot-merge while mounted; waits for it
  show("base", base)
  print("  committed; report.txt on base: " .. read(mnt .. "/report.txt"))
  sh("umount %s", mnt)

  say "For Your Eyes Only: dm-crypt with a random key"
  --   KEY=$(dd if=/dev/urandom bs=1 count=32 | od -An -tx1 | tr -d ' \n')
  --   echo "0 8192 crypt aes-plain $KEY 0 /dev/mapper/base 0" | dmsetup create mydata
  -- Done right: the key stays in locked memory and the kernel keyring; the
  -- table names it, so `dmsetup table --showkeys` shows no key.
  local key <close> = dm.key.random(64)
  local mydata = dm.create("mydata", dm.crypt {base, key = key})
  show("mydata", mydata)
  put(mydata.path, 0, "for your eyes only")                  -- over the old filesystem
  print("  mydata reads: " .. get(mydata.path, 0, 32))
  print(("  the loop holds: %s"):format(get(l1.path, 0, 32) == "for your eyes only" and "plaintext" or "ciphertext"))
  mydata:remove()
  base:remove()

  say "the same kind of devices as a declarative stack"
  local s = dm.stack {prefix = "article", base = dm.table {dm.linear(l1), dm.linear(l2)},
                      half = dm.linear("base", {length = 4096}),
                      tiger = dm.striped {chunk = 16, l1, l2}}
  print(s:plan())
  s:apply()
  print(s:status())
  s:apply()                                          -- already there: nothing to do
  s:teardown()
end
