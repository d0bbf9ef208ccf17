--- Thin provisioning: a pool of data blocks, thin volumes that take blocks
-- as they are written, and snapshots of them at any depth with no COW to
-- size. `dm.thin` is the thin target's builder (callable) and carries the
-- workflow: `dm.thin.pool {...}` makes a pool device, `pool:volume(name,
-- size)` a volume, `vol:snapshot(name)` a snapshot of it.
-- @module devmapper.thin
local check = require "devmapper.check"
local device = require "devmapper.device"
local scope = require "devmapper.scope"
local target = require "devmapper.target"
local transaction = require "devmapper.transaction"

local thin = {}

--- A thin segment (see targets/thin.lua): dm.thin {pool =, id =, length =, origin =, create = true}.
thin.new = target.get("thin").builder

--- A thin-pool segment (see targets/thin_pool.lua), the same as dm.thin_pool.
thin.pool_target = target.get("thin-pool").builder

local MAX_ID = target.get("thin-pool").MAX_ID
local EEXIST = 17

local Pool = {__name = "devmapper.ThinPool"}
Pool.__index = Pool
local Volume = {__name = "devmapper.ThinVolume"}
Volume.__index = Volume

--- Make a pool device.
-- As dmsetup create NAME --table "0 <data size> thin-pool
-- <metadata> <data> <block> <low water> ...". A zeroed metadata device gets
-- a new pool; a pool's metadata opens that pool (its volumes are then
-- there to open, with pool:volume(name, size, {id = n, create = false})).
-- @tparam table opts {name = "pool", metadata =, data =, block = "64KiB",
--   low_water = 0, features = {...}, length =, format = false (zero the
--   metadata first: a new, empty pool), uuid =}
-- @treturn ThinPool with .device, :volume(), :usage(), :remove()
-- @usage local pool = dm.thin.pool {metadata = l1, data = l2}
function thin.pool(opts)
  check.fields("thin.pool", opts, {name = true, metadata = true, data = true, block = true, low_water = true,
                                   features = true, length = true, format = true, uuid = true})
  local name = opts.name or "pool"
  local seg = thin.pool_target {metadata = opts.metadata, data = opts.data, block = opts.block,
                                low_water = opts.low_water, features = opts.features, length = opts.length,
                                format = opts.format}
  local dev = device.create(name, seg, {uuid = opts.uuid})
  return setmetatable({device = dev, name = name, path = dev.path, block = seg.block, volumes = {}, next_id = 0}, Pool)
end

-- A new id: the next one this pool object has not used, passing over ids
-- the pool already has (made by someone else) by the kernel's EEXIST.
local function new_id(self, op, make)
  local id = self.next_id
  while true do
    if id > MAX_ID then check.fail(op, self.name, "has no free thin id left (ids are 0 to %d)", MAX_ID) end
    local ok, err = pcall(make, id)
    if ok then break end
    if not (type(err) == "table" and err.errno == EEXIST) then error(err, 0) end
    id = id + 1
  end
  self.next_id = id + 1
  return id
end

-- The volume's device over an id; on failure a new id is deleted again.
local function activate(self, op, name, size, id, fresh, origin)
  local tx = transaction.begin(op, name)
  if fresh then tx:undo("delete thin id " .. id, function() self.device:delete(id) end) end
  local dev = tx:step("create volume", device.create, name,
                      thin.new {pool = self.device, id = id, length = size, origin = origin, create = false})
  tx:done()
  local vol = setmetatable({pool = self, id = id, device = dev, name = name, path = dev.path, origin = origin}, Volume)
  self.volumes[name] = vol
  scope.track("thin volume " .. name, function() vol:remove() end)
  return vol
end

local function check_name(op, self, name)
  check.name(op, name)
  if self.removed then check.fail(op, self.name, "the pool was removed") end
end

--- A thin volume of SIZE (virtual: blocks are taken as they are written).
-- @tparam string name its device's name
-- @param size sectors or a size string ("1GiB")
-- @tparam[opt] table opts {id = a thin id (default: the next free one),
--   create = true (false: open the existing volume with this id),
--   origin = an external read-only origin (its data shows through until overwritten)}
-- @treturn ThinVolume with .device, .id, :snapshot(), :usage(), :remove(), :delete()
function Pool:volume(name, size, opts)
  opts = opts or {}
  check.fields("volume", opts, {id = true, create = true, origin = true})
  check_name("volume", self, name)
  if size == nil then check.fail("volume", name, "field 'size' is required (sectors or a size string)") end
  local create = opts.create ~= false
  local id = opts.id
  if id ~= nil then
    if math.type(id) ~= "integer" or id < 0 or id > MAX_ID then
      check.fail("volume", name, "field 'id' must be an integer from 0 to %d, got %s", MAX_ID, tostring(id))
    end
    if create then self.device:create_thin(id) end
  elseif not create then
    check.fail("volume", name, "field 'id' is required with create = false (which volume to open)")
  else
    id = new_id(self, "volume", function(n) self.device:create_thin(n) end)
  end
  return activate(self, "volume", name, size, id, create, opts.origin)
end

--- How full the pool is: the thin-pool status as a table (data_used,
-- data_total, metadata_used, metadata_total in blocks, mode, transaction, ...).
function Pool:usage()
  return setmetatable(self.device:status()[1].status, {__tostring = function(u)
    if not u.data_total then return tostring(u.mode) end
    return ("data %d/%d blocks, metadata %d/%d blocks, %s"):format(u.data_used, u.data_total,
                                                                  u.metadata_used, u.metadata_total, u.mode)
  end})
end

--- Remove the pool's device, after the devices of its volumes made here
-- (thins before their pool). The volumes' data stays in the pool's metadata
-- and data devices. Another device still using the pool stops it, named.
function Pool:remove()
  if self.removed then return end
  local names = {}
  for n in pairs(self.volumes) do names[#names + 1] = n end
  table.sort(names, function(a, b) return self.volumes[a].id > self.volumes[b].id end)
  for _, n in ipairs(names) do self.volumes[n]:remove() end
  local info = device.settled_info(self.name)
  if info and info.open_count > 0 then
    local users = {}
    for _, d in ipairs(device.list()) do
      local ok, deps = pcall(device.named(d.name).deps, device.named(d.name))
      for _, x in ipairs(ok and deps or {}) do
        if x.major == info.major and x.minor == info.minor then users[#users + 1] = d.name end
      end
    end
    check.fail("remove", self.name, "is still in use (by %s): remove its thin volumes first",
               #users > 0 and table.concat(users, ", ") or ("open count " .. info.open_count))
  end
  if info then self.device:remove() end
  self.removed = true
end

function Pool:__tostring() return "devmapper.ThinPool " .. self.name end

--- A snapshot of this volume: a new thin volume sharing its blocks (the
-- volume is suspended around the kernel's create_snap, then resumed).
-- Snapshots of snapshots work the same, to any depth.
-- @tparam string name the snapshot's device name
-- @tparam[opt] table opts {id = a thin id (default: the next free one), size = the volume's}
-- @treturn ThinVolume
function Volume:snapshot(name, opts)
  opts = opts or {}
  check.fields("snapshot", opts, {id = true, size = true})
  local pool = self.pool
  check_name("snapshot", pool, name)
  if self.removed then check.fail("snapshot", self.name, "was removed") end
  local origin_dev = self.device
  local size = opts.size or origin_dev:sectors()
  local function make(n) pool.device:create_snap(n, self.id, origin_dev) end
  local id
  if opts.id ~= nil then
    id = opts.id
    make(id)
  else
    id = new_id(pool, "snapshot", make)
  end
  return activate(pool, "snapshot", name, size, id, true, self.origin)
end

--- The volume's status: {mapped = sectors written, highest = the highest mapped sector}.
function Volume:usage()
  return self.device:status()[1].status
end

--- Remove the volume's device; its data stays in the pool (open it again
-- with pool:volume(name, size, {id = vol.id, create = false})).
function Volume:remove()
  if self.removed then return end
  if device.settled_info(self.name) then
    device.ensure_resumed(self.name)
    self.device:remove()
  end
  self.removed = true
  self.pool.volumes[self.name] = nil
end

--- Remove the volume's device and delete the volume from the pool, with its data.
function Volume:delete()
  self:remove()
  self.pool.device:delete(self.id)
end

function Volume:__tostring() return ("devmapper.ThinVolume %s (id %d)"):format(self.name, self.id) end

return setmetatable(thin, {__call = function(_, opts) return thin.new(opts) end})
