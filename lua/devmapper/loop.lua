--- Loop devices ("How To Fake It With A Loop"): a file as a block device.
-- @module devmapper.loop
local core = require "devmapper.core"
local kernel = require "devmapper.kernel"
local size = require "devmapper.size"
local check = require "devmapper.check"
local scope = require "devmapper.scope"

local loop = {}

local Loop = {__name = "devmapper.Loop"}
Loop.__index = Loop

local function wrap(l, file, made_file)
  return setmetatable({path = l.path, number = l.number, major = l.major, minor = l.minor,
                       file = file, made_file = made_file, backing = l.inode and {l.inode, l.device}}, Loop)
end

-- Whether the loop is still attached to the file this Loop attached (not
-- detached and reused by someone else meanwhile): the same inode, even if
-- the file was renamed or removed since; by name where that is not known.
local function still_ours(l, i)
  if not i then return false end
  if l.backing and i.inode then return i.inode == l.backing[1] and i.device == l.backing[2] end
  local file = l.file
  return i.backing_file == file or i.backing_file:sub(-#file - 1) == "/" .. file
end

local function attach_opts(opts)
  opts = opts or {}
  local o = {}
  for _, k in ipairs {"readonly", "autoclear", "direct_io", "partscan"} do o[k] = opts[k] and true or nil end
  for _, k in ipairs {"offset", "sizelimit"} do
    if opts[k] ~= nil and opts[k] ~= 0 then o[k] = size.bytes(opts[k], k) end
  end
  local bs = opts.block_size
  if bs ~= nil then
    if math.type(bs) ~= "integer" or bs < 512 or bs > 4096 or bs & (bs - 1) ~= 0 then
      check.fail("loop.attach", nil, "field 'block_size' must be 512, 1024, 2048 or 4096 (bytes), got %s", tostring(bs))
    end
    o.block_size = bs
  end
  return o
end

--- Attach a loop device to an existing file.
-- As `losetup --find --show`.
-- @tparam string file
-- @tparam[opt] table opts {readonly=, autoclear=, offset=, sizelimit=, direct_io=, partscan=,
-- block_size = logical block size in bytes (losetup --sector-size)}; offset and sizelimit are
-- sizes ("1MiB") or sectors
-- @treturn Loop
-- @usage local l = dm.loop.attach("/tmp/store2", {autoclear = true})
function loop.attach(file, opts)
  if type(file) ~= "string" then check.fail("loop.attach", nil, "field 'file' must be a path, got %s", type(file)) end
  local l = wrap(kernel.call("loop_attach", file, attach_opts(opts)), file, false)
  scope.track("loop " .. l.path, function()
    if still_ours(l, kernel.call("loop_info", l.path)) then l:detach() end
    if l.made_file and os.remove(l.file) then kernel.note("rm -f " .. kernel.quote(l.file)) end
  end)
  return l
end

--- Make a sparse file of the given size and attach a loop device to it.
-- The file must not exist yet unless opts.reuse is set.
-- @tparam string file
-- @param sz sectors or a size like "2MiB"
-- @tparam[opt] table opts as for attach, plus reuse
-- @treturn Loop
-- @usage local l1 = dm.loop.create("/tmp/store1", "2MiB")
function loop.create(file, sz, opts)
  if type(file) ~= "string" then check.fail("loop.create", nil, "field 'file' must be a path, got %s", type(file)) end
  local bytes = size.bytes(sz, "size")
  kernel.call("loop_file", file, bytes, {reuse = opts and opts.reuse})
  local ok, l = pcall(loop.attach, file, opts)
  if not ok then
    if not (opts and opts.reuse) then os.remove(file) end
    error(l, 0)
  end
  l.made_file = not (opts and opts.reuse)
  return l
end

--- The Loop for an attached loop device path, or nil when it is not bound.
function loop.open(path)
  local i = kernel.call("loop_info", path)
  return i and wrap(i, i.backing_file, false)
end

--- Loop devices attached to a file.
-- @treturn {Loop,...}
function loop.find(file)
  local out = {}
  for i, p in ipairs(kernel.call("loop_find", file)) do out[i] = loop.open(p) end
  return out
end

--- A loop device (devmapper.Loop): its `path`, `number`, `major`, `minor`
-- and backing `file`.
-- @type Loop

--- Detach (losetup -d). A device still in use is detached when released.
function Loop:detach()
  kernel.call("loop_detach", self.path)
  if kernel.dry_run then return end
  -- The kernel detaches a loop someone holds open when they close it. udev's
  -- probe of a new loop is such a holder, for a moment: while udev has events
  -- queued, wait (at most 5 s) for the detach to land. Another holder (a dm
  -- table) keeps it longer, by design: no wait for that.
  local deadline = core.monotonic() + 5
  while core.monotonic() < deadline do
    local ok, info = pcall(core.loop_info, self.path)
    local queued = io.open("/run/udev/queue")
    if queued then queued:close() end
    if not (ok and info and queued) then return end
    core.sleep(0.02)
  end
end

--- Detach and delete the backing file, when loop.create made it.
function Loop:remove()
  self:detach()
  if self.made_file and os.remove(self.file) then kernel.note("rm -f " .. kernel.quote(self.file)) end
end

--- {backing_file, offset, sizelimit (bytes), readonly, autoclear, partscan, direct_io}
function Loop:info()
  return kernel.call("loop_info", self.path)
end

--- Size in 512-byte sectors.
function Loop:sectors()
  return kernel.blkdev(self.path).sectors
end

--- The loop device's number, "major:minor".
-- @treturn string
function Loop:devno() return self.major .. ":" .. self.minor end

function Loop:__tostring() return ("devmapper.Loop %s (%s)"):format(self.path, self.file or "?") end

loop.Loop = Loop
return loop
