--- Device-mapper devices: create, load, suspend, resume, remove and read back.
local check = require "devmapper.check"
local kernel = require "devmapper.kernel"
local dmtable = require "devmapper.table"
local target = require "devmapper.target"
local scope = require "devmapper.scope"

local device = {}

local Device = {__name = "devmapper.Device"}
Device.__index = Device

local function wrap(name)
  return setmetatable({name = name, path = "/dev/mapper/" .. name}, Device)
end

local function as_table(t, op, name)
  if dmtable.is_table(t) then return t end
  if getmetatable(t) == target.Segment then return dmtable {t} end
  if type(t) == "string" then return dmtable.parse(t) end
  check.fail(op, name, "field 'table' must be a table, a target or dmsetup table text, got %s", type(t))
end

-- The ioctl with the table's preparations (keyring keys) made first and
-- taken back if it fails.
local function with_prepared(t, op, name, targets, opts)
  t:prepare()
  local ok, err = pcall(kernel.call, op, name, targets, opts)
  if not ok then
    t:prepare(true)
    error(err, 0)
  end
end

--- Create a device with a table and make it live (dmsetup create).
-- @tparam string name 1-127 bytes, no '/'
-- @param t a Table, a single target, or dmsetup table text
-- @tparam[opt] table opts {uuid = string, readonly = bool, lookup = function for member names}
-- @treturn Device
-- @usage local dev = dm.create("tiger", dm.striped {chunk = 16, l1, l2})
function device.create(name, t, opts)
  opts = opts or {}
  check.name("create", name)
  check.uuid("create", name, opts.uuid)
  t = as_table(t, "create", name)
  with_prepared(t, "dm_create", name, t:targets(dmtable.context(opts.lookup), "create", name),
                {uuid = opts.uuid, readonly = opts.readonly})
  local dev = wrap(name)
  scope.track("device " .. name, function()
    if kernel.call("dm_info", dev.name) then
      device.ensure_resumed(dev.name)
      dev:remove()
    end
  end)
  return dev
end

--- The Device of an existing device-mapper device; raises if there is none.
-- @tparam string name
function device.open(name)
  check.name("open", name)
  if not kernel.call("dm_info", name) then
    check.fail("open", name, "no such device")
  end
  return wrap(name)
end

--- All devices, in one ioctl: {{name=, major=, minor=}, ...}.
function device.list()
  return kernel.call("dm_list")
end

--- Load a table into the inactive slot (dmsetup load); resume makes it live.
function Device:load(t, opts)
  opts = opts or {}
  t = as_table(t, "load", self.name)
  with_prepared(t, "dm_load", self.name, t:targets(dmtable.context(opts.lookup), "load", self.name),
                {readonly = opts.readonly})
  return self
end

--- Suspend I/O (dmsetup suspend). opts: {noflush=, nolockfs=}
function Device:suspend(opts)
  kernel.call("dm_suspend", self.name, opts)
  return self
end

--- Resume, making a loaded table live.
function Device:resume()
  kernel.call("dm_resume", self.name)
  return self
end

--- Drop the inactive table (dmsetup clear).
function Device:clear()
  kernel.call("dm_clear", self.name)
  return self
end

--- Replace the live table safely: load first, then suspend, resume. On
-- failure the inactive table is cleared and the device resumed, so it is
-- never left suspended.
-- @param t the new table
-- @tparam[opt] table opts {noflush=, nolockfs=, lookup=, keep_old = false (the
--   caller may load the old table again, so keep what it names, e.g. keyring keys)}
function Device:reload(t, opts)
  opts = opts or {}
  local read, old = false, nil
  if not opts.keep_old and #device.after_drop > 0 then read, old = pcall(kernel.call, "dm_table", self.name) end
  self:load(t, opts)
  local ok, err = pcall(self.suspend, self, opts)
  if ok then ok, err = pcall(self.resume, self) end
  if not ok then
    pcall(self.clear, self)
    device.ensure_resumed(self.name)
    error(err, 0)
  end
  if read then device.dropped(self.name, old) end
  return self
end

--- Resume a device if it is suspended; if the resume fails, give it the
-- error target so that nothing waits on it forever.
function device.ensure_resumed(name)
  local ok, info = pcall(kernel.call, "dm_info", name)
  if not ok or not info or not info.suspended then return end
  if pcall(kernel.call, "dm_resume", name) then return end
  pcall(kernel.call, "dm_clear", name)
  local sectors = 0
  local tok, live = pcall(kernel.call, "dm_table", name)
  if tok then for _, s in ipairs(live) do sectors = s.start + s.length end end
  if sectors > 0 and pcall(kernel.call, "dm_load", name, {{start = 0, length = sectors, type = "error", params = ""}}) then
    pcall(kernel.call, "dm_resume", name)
  end
end

--- Hooks run after a device drops a table (removed, or reloaded with
-- another), with its name and that table's targets (crypt uses one to unlink
-- the keyring keys no device uses any more).
device.after_drop = {}

function device.dropped(name, targets)
  for _, hook in ipairs(device.after_drop) do hook(name, targets) end
end

--- Remove the device (dmsetup remove --retry). opts: {retry = true, deferred = false}
function Device:remove(opts)
  local ok, live = true, nil
  if #device.after_drop > 0 then ok, live = pcall(kernel.call, "dm_table", self.name) end
  kernel.call("dm_remove", self.name, opts)
  device.dropped(self.name, ok and live or {})
end

--- Rename (dmsetup rename).
function Device:rename(newname)
  check.name("rename", newname)
  kernel.call("dm_rename", self.name, newname)
  self.name, self.path = newname, "/dev/mapper/" .. newname
  return self
end

--- Send a target message (dmsetup message); returns the target's answer, if any.
-- @tparam string msg
-- @tparam[opt=0] integer sector
function Device:message(msg, sector)
  return kernel.call("dm_message", self.name, sector or 0, msg)
end

--- The live table (or the inactive one with {inactive = true}), as a Table.
-- Crypt keys are shown as zeros, as dmsetup does; keyring references as they are.
-- With {keys = true} a crypt segment's key comes back as a Key object (never
-- as bytes in a string), so the table can be loaded again, as a snapshot
-- copies its origin's table.
function Device:table(opts)
  return dmtable.from_targets(kernel.call("dm_table", self.name, opts))
end

--- Status lines {{start=, length=, type=, params=}, ...} (dmsetup status).
function Device:status(opts)
  return kernel.call("dm_status", self.name, opts)
end

--- {exists, suspended, readonly, open_count, major, minor, event_nr,
-- live_table, inactive_table, target_count, uuid}; nil if it is gone.
function Device:info()
  return kernel.call("dm_info", self.name)
end

--- The devices this one uses, as block-device facts (dmsetup deps).
function Device:deps()
  local out = {}
  for i, d in ipairs(kernel.call("dm_deps", self.name)) do
    local ok, f = pcall(kernel.blkdev, d.major .. ":" .. d.minor)
    out[i] = ok and f or d
  end
  return out
end

function Device:devno()
  local i = self:info()
  return i and (i.major .. ":" .. i.minor)
end

--- Size in 512-byte sectors.
function Device:sectors()
  return kernel.blkdev(self.path).sectors
end

function Device:__tostring() return "devmapper.Device " .. self.name end

device.Device = Device
device.as_table = as_table
return device
