-- A live CD: a read-only base image with a RAM-backed overlay on top. The
-- system writes anywhere, the image stays untouched, and every change is
-- forgotten when the overlay goes (here: when the scope closes).
--   losetup --read-only /dev/loop0 livecd.img
--   truncate -s 8M /dev/shm/cow; losetup /dev/loop1 /dev/shm/cow
--   echo "0 $(blockdev --getsize /dev/loop0) snapshot /dev/loop0 /dev/loop1 N 8" | dmsetup create live
local dm = require "devmapper"
local dir = arg and arg[1] or os.getenv("TMPDIR") or "/tmp"

-- RAM: a tmpfs we may write in.
local function writable(d)
  local f = io.open(d .. "/.dmlua-probe", "w")
  if f then f:close() os.remove(d .. "/.dmlua-probe") end
  return f ~= nil
end
local ram = arg and arg[2] or (writable("/dev/shm") and "/dev/shm") or "/run"

local function read(path, n)
  local f = assert(io.open(path, "rb"))
  local s = f:read(n)
  f:close()
  return (s:gsub("%z+$", ""))
end

-- The "CD": an image file with something on it (removed at the very end).
local image = dir .. "/livecd.img"
local image_file <close> = setmetatable({}, {__close = function() os.remove(image) end})
do
  local f = assert(io.open(image, "wb"))
  f:write("LIVECD: the base system")
  f:seek("set", 4 * 1024 * 1024 - 1)
  f:write("\0")
  f:close()
end

do
  local scope <close> = dm.scope()
  local cd = dm.loop.attach(image, {readonly = true})
  local cow = dm.loop.create(ram .. "/dmlua-livecd-cow", "8MiB")
  print(("livecd: image %s on %s (read-only), overlay store %s on %s (RAM)"):format(image, cd.path, cow.file, cow.path))

  local live = dm.snapshot.overlay(cd, {cow = cow, persistent = false, name = "live"})
  print("live:   " .. tostring(live.view:table()))

  local f = assert(io.open(live.view.path, "r+b"))
  f:write("LIVECD: changed by the running system")
  f:close()
  print("        live reads:  " .. read(live.view.path, 64))
  print("        image reads: " .. read(cd.path, 64))
  print("        RAM used:    " .. tostring(live:usage()))
end
print("livecd: overlay, RAM store and loop gone; the image reads: " .. read(image, 64))
