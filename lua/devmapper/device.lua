--- Device-mapper devices: create, load, suspend, resume, remove and read back.
-- @module devmapper.device
local check = require "devmapper.check"
local core = require "devmapper.core"
local kernel = require "devmapper.kernel"
local keyring = require "devmapper.keyring"
local dmtable = require "devmapper.table"
local target = require "devmapper.target"
local scope = require "devmapper.scope"

local device = {}

local Device = {__name = "devmapper.Device"}

-- Target messages as methods (pool:create_thin(1), raid:check()): a name a
-- Device does not have, which some target declares in its `messages`.
function Device.__index(_, k)
  local m = Device[k]
  if m == nil and type(k) == "string" and target.has_message(k) then
    return function(self, ...) return device.send(self, k, ...) end
  end
  return m
end

local function wrap(name)
  return setmetatable({name = name, path = "/dev/mapper/" .. name}, Device)
end

local function as_table(t, op, name)
  if dmtable.is_table(t) then return t end
  if getmetatable(t) == target.Segment then return dmtable {t} end
  if type(t) == "string" then return dmtable.parse(t) end
  check.fail(op, name, "field 'table' must be a table, a target or dmsetup table text, got %s", type(t))
end

-- Bookkeeping after the kernel did what was asked: a failure here is a
-- warning, never an error, since the operation itself happened.
local function after(what, fn, ...)
  local ok, err = pcall(fn, ...)
  if not ok then kernel.warn(("%s: %s"):format(what, tostring(err))) end
end

-- Read-only if asked, or if a target of the table needs it (verity).
local function readonly(targets, asked)
  if asked then return true end
  for _, s in ipairs(targets) do
    local decl = target.get(s.type)
    if decl and decl.readonly then return true end
  end
  return nil
end

-- The ioctl with the table's keyring keys linked first and taken back if it
-- fails. Returns keyring.add's settle (nil for a table without keyring keys).
local function with_keys(name, targets, op, ...)
  local undo, settle = keyring.add(name, targets)
  local ok, err = pcall(kernel.call, op, name, targets, ...)
  if not ok then
    if undo then undo() end
    error(err, 0)
  end
  return settle
end

-- Create a device whose table names keyring keys: the name first (a device
-- without a table), so that a ring of that name can only be a stale one and
-- is replaced without searching every ring in @u; then the keys, the table
-- and the resume (the three ioctls libdevmapper's create makes). On failure
-- the keys are taken back and the device removed.
local function create_keyed(name, targets, o)
  kernel.call("dm_create", name, {}, {uuid = o.uuid})
  local undo
  local ok, err = pcall(function()
    undo = keyring.add(name, targets, true)
    kernel.call("dm_load", name, targets, {readonly = o.readonly})
    kernel.call("dm_resume", name)
  end)
  if not ok then
    if undo then undo() end
    local removed, rerr = pcall(kernel.call, "dm_remove", name)
    if not removed then
      kernel.warn(("%s is left without a table: removing it failed too (%s)"):format(name, tostring(rerr)))
    end
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
  local ctx = dmtable.context(opts.lookup)
  return device.make(name, t, t:targets(ctx, "create", name), ctx, opts)
end

--- Create from a table already resolved (Table:targets) with ctx: what
-- dm.create does once it has checked the name and resolved the table.
-- @local
function device.make(name, t, targets, ctx, opts)
  t:before_create(ctx)
  local o = {uuid = opts.uuid, readonly = readonly(targets, opts.readonly)}
  local dev = wrap(name)
  -- one critical section: a signal's error comes once the scope knows the
  -- device, so that the scope's undo removes it
  kernel.critical(function()
    if keyring.names_keys(targets) then
      create_keyed(name, targets, o)
    else
      -- a table without keyring keys touches no ring: a stale one, left by a
      -- kill between linking keys and a create, goes at remove or dm.cleanup
      kernel.call("dm_create", name, targets, o)
    end
    scope.track("device " .. name, function()
      if kernel.call("dm_info", dev.name) then
        device.ensure_resumed(dev.name)
        dev:remove()
      end
    end)
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

--- The device's info once udev has let go of it: udev opens a device that
-- was just written, to probe it (its "watch" rule), so while udev has
-- events queued an open count may be udev's own; wait for its queue to
-- drain, at most 5 s. Without udev, the info at once.
-- @local
function device.settled_info(name)
  local info = kernel.call("dm_info", name)
  local deadline = core.monotonic() + 5
  while info and info.open_count > 0 and not kernel.dry_run and core.monotonic() < deadline do
    local queued = io.open("/run/udev/queue")
    if not queued then break end
    queued:close()
    core.sleep(0.05)
    info = kernel.call("dm_info", name)
  end
  return info
end

--- A Device for a name, without asking the kernel (for a caller that just did).
-- @local
function device.named(name) return wrap(name) end

--- All devices, in one ioctl: {{name=, major=, minor=}, ...}.
function device.list()
  return kernel.call("dm_list")
end

--- A device-mapper device (devmapper.Device), from dm.create or dm.device:
-- its `name` and `path` (/dev/mapper/NAME). The messages of its targets are
-- methods too (see Target messages in @{devmapper}).
-- @type Device

-- Load the resolved targets into the inactive slot, keys first.
local function load(self, targets, opts)
  with_keys(self.name, targets, "dm_load", {readonly = readonly(targets, opts and opts.readonly)})
end

--- Load a table into the inactive slot (dmsetup load); resume makes it live.
-- @param t a Table, a single target, or dmsetup table text
-- @tparam[opt] table opts {readonly =, lookup =}
function Device:load(t, opts)
  opts = opts or {}
  t = as_table(t, "load", self.name)
  load(self, t:targets(dmtable.context(opts.lookup), "load", self.name), opts)
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
  after("keyring of " .. self.name, keyring.settle_live, self.name)
  return self
end

--- Drop the inactive table (dmsetup clear).
function Device:clear()
  kernel.call("dm_clear", self.name)
  after("keyring of " .. self.name, keyring.settle_live, self.name)
  return self
end

-- Suspend and resume as one window that a signal can not cut in two.
local function swap(self, opts)
  kernel.critical(function()
    kernel.call("dm_suspend", self.name, opts)
    kernel.call("dm_resume", self.name)
  end)
end

--- Replace the live table safely: load first, then suspend, resume. On
-- failure the inactive table is cleared, the device resumed (never left
-- suspended) and keys linked for the new table taken back.
-- @param t the new table
-- @tparam[opt] table opts {noflush=, nolockfs=, lookup=, settle = true (false: keep
--   the old table's keys in the device's keyring, for a caller that may load it again)}
function Device:reload(t, opts)
  opts = opts or {}
  t = as_table(t, "reload", self.name)
  return self:reload_targets(t:targets(dmtable.context(opts.lookup), "reload", self.name), opts)
end

--- Reload with targets already resolved (Table:targets); as Device:reload.
function Device:reload_targets(targets, opts)
  opts = opts or {}
  local undo, settle = keyring.add(self.name, targets)
  local ok, err = pcall(function()
    kernel.call("dm_load", self.name, targets, {readonly = readonly(targets, opts.readonly)})
    swap(self, opts)
  end)
  if not ok then
    pcall(kernel.call, "dm_clear", self.name)
    device.ensure_resumed(self.name)
    if undo then undo() end
    error(err, 0)
  end
  if opts.settle ~= false then
    -- without keyring keys now, the ring (if the old table had one) is read to drop it
    after("keyring of " .. self.name, settle or keyring.settle, self.name, targets)
  end
  return self
end

-- A table of that many sectors that fails every I/O (the error target).
local function failing(sectors)
  return dmtable {target.get("error").builder(sectors)}:targets()
end

--- Resume a device if it is suspended; if the resume fails, give it the
-- error target so that nothing waits on it forever.
-- @local
function device.ensure_resumed(name)
  local ok, info = pcall(kernel.call, "dm_info", name)
  if not ok or not info or not info.suspended then return end
  if pcall(kernel.call, "dm_resume", name) then return end
  pcall(kernel.call, "dm_clear", name)
  local sectors = 0
  local tok, live = pcall(kernel.call, "dm_table", name)
  if tok then for _, s in ipairs(live) do sectors = s.start + s.length end end
  if sectors > 0 and pcall(kernel.call, "dm_load", name, failing(sectors)) then
    pcall(kernel.call, "dm_resume", name)
  end
end

--- Remove the device; its keyring keys go with it.
-- As `dmsetup remove --retry`.
-- @tparam[opt] table opts {retry = true, deferred = false, force = false: if it is
--   open, first give it the error target so that its users fail fast, as
--   dmsetup remove --force does}
function Device:remove(opts)
  opts = opts or {}
  local errored = false
  if opts.force then
    local info = device.settled_info(self.name)
    if info and info.open_count > 0 then
      local sectors = 0
      for _, s in ipairs(kernel.call("dm_table", self.name)) do sectors = s.start + s.length end
      if sectors > 0 then
        local ok, err = pcall(function()
          kernel.call("dm_load", self.name, failing(sectors))
          swap(self, {noflush = true})
        end)
        if not ok then
          pcall(kernel.call, "dm_clear", self.name)
          device.ensure_resumed(self.name)
          error(err, 0)
        end
        errored = true
      end
    end
  end
  local ok, err = pcall(kernel.call, "dm_remove", self.name, {retry = opts.retry, deferred = opts.deferred})
  if not ok then
    if errored and type(err) == "table" then
      err.message = err.message .. "; it is still open, and now fails all I/O (the error target): remove it once closed"
    end
    error(err, 0)
  end
  after("keyring of " .. self.name, keyring.drop, self.name)
end

--- Rename (dmsetup rename); the device's keyring keys follow it.
function Device:rename(newname)
  check.name("rename", newname)
  kernel.call("dm_rename", self.name, newname)
  after("keyring of " .. newname, keyring.rename, self.name, newname)
  self.name, self.path = newname, "/dev/mapper/" .. newname
  return self
end

--- Send a target message (dmsetup message); returns the target's answer, if any.
-- @tparam string msg
-- @tparam[opt=0] integer sector
function Device:message(msg, sector)
  return kernel.call("dm_message", self.name, sector or 0, msg)
end

--- Send the message `name` of one of the device's live targets, as its
-- declaration makes it from the arguments (checked before the kernel sees
-- them); returns what the declaration returns.
-- @local
function device.send(self, name, ...)
  local types = {}
  for _, l in ipairs(kernel.call("dm_status", self.name)) do
    local decl = target.get(l.type)
    local fn = decl and decl.messages and decl.messages[name]
    if fn then return fn(self, ...) end
    types[#types + 1] = l.type
  end
  check.fail(name, self.name, "is not a message of its targets (%s)", table.concat(types, ", "))
end

--- The live table (or the inactive one with {inactive = true}), as a Table.
-- Hex crypt keys show as zeros, as dmsetup shows them (such a table can not
-- be loaded again); keyring references as they are. With {keys = true} a
-- hex key comes back as a Key object (never as bytes in a string), so the
-- table can be loaded again, as a snapshot copies its origin's table.
function Device:table(opts)
  return dmtable.from_targets(kernel.call("dm_table", self.name, opts), not (opts and opts.keys))
end

--- Status lines {{start=, length=, type=, params=, status=}, ...} (dmsetup
-- status); `status` is the target's status parsed, for types that have a parser.
function Device:status(opts)
  local lines = kernel.call("dm_status", self.name, opts)
  for _, l in ipairs(lines) do l.status = target.status(l.type, l.params) end
  return lines
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

--- The device's number, "major:minor" (nil once it is gone).
-- @treturn string
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
--- A Table from what dm.create takes (a Table, a target or table text).
-- @function as_table
-- @local
device.as_table = as_table
return device
