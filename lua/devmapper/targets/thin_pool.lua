--- @module devmapper

--- thin-pool: a pool of data blocks that thin volumes take as they are
-- written (dm-thin.c: <metadata dev> <data dev> <data block size>
-- <low water mark> [<#features> <feature>...]). The pool is the only
-- segment of its table. On a zeroed metadata device the kernel formats a
-- new pool; on a pool's metadata it opens that pool. With format = true a
-- device created with the segment first gets the metadata's first block
-- zeroed: a new, empty pool (every thin volume on the old one is lost).
--
-- Built as dm.thin_pool {metadata =, data =, block = 128 (sectors or a size, 64KiB to 1GiB),
-- low_water = 0 (free data blocks that raise an event), features = {...},
-- length = the data device's size in whole blocks, format = false}
-- @function thin_pool
-- @within Target builders
-- @usage dm.thin_pool {metadata = l1, data = l2, block = "64KiB"}
local check = require "devmapper.check"
local field = require "devmapper.field"
local kernel = require "devmapper.kernel"
local target = require "devmapper.target"

local MIN_BLOCK, MAX_BLOCK = 128, 2097152     -- 64 KiB and 1 GiB, in sectors
local MAX_ID = (1 << 24) - 1                  -- thin ids are 24 bits
local FEATURES = {"skip_block_zeroing", "ignore_discard", "no_discard_passdown", "read_only", "error_if_no_space"}

-- A thin id or transaction id for a message, checked as the kernel reads it (kstrtoull).
local function id(op, pool, name, v, max)
  if math.type(v) ~= "integer" or v < 0 or v > (max or MAX_ID) then
    check.fail(op, pool.name, "field '%s' must be an integer from 0 to %d, got %s", name, max or MAX_ID, tostring(v))
  end
  return v
end

local function send(pool, text) return pool:message(text) end

-- The pool's first 4 KiB (its superblock) zeroed: the kernel then formats a new pool.
local function zero_metadata(path)
  require("devmapper.targets.snapshot").zero_cow(path, 8)
end

local decl = {
  type = "thin-pool",
  params = {
    {"metadata", field.device},
    {"data", field.device},
    {"block", field.number {parser = "kstrto", min = MIN_BLOCK, max = MAX_BLOCK, sectors = true}, default = MIN_BLOCK},
    {"low_water", field.number {parser = "kstrto"}, default = 0},
    {"features", field.options {order = FEATURES, max = 4, fold = true, always = true, count_optional = true}},
  },
  flags = {"format"},
  alone = true,
  -- dm.thin_pool {metadata =, data =, block = 128 (sectors or a size, 64KiB to 1GiB),
  -- low_water = 0 (free data blocks that raise an event), features = {...},
  -- length = the data device's size in whole blocks, format = false}
  new = function(opts) return target.fields("thin-pool", opts, {}) end,
  length = function(r, ctx) return ctx.facts(r.data).sectors // r.block * r.block end,
  areas = function(r) return {{r.data, 0, r.length, "data"}} end,
  check = function(r, ctx, fail)
    if r.block % MIN_BLOCK ~= 0 then
      fail("block", "%d sectors must be a multiple of 128 (64 KiB)", r.block)
    end
    local n = 0
    for _ in pairs(r.features) do n = n + 1 end
    if n > 4 then fail("features", "may hold at most 4 of %s (the kernel reads no more)", table.concat(FEATURES, ", ")) end
    local m, d = ctx.facts(r.metadata), ctx.facts(r.data)
    if (m and d and m.major == d.major and m.minor == d.minor) or r.metadata == r.data then
      fail("data", "must not be the metadata device (%s)", ctx.name(r.metadata))
    end
    if r.format and r.features.read_only then
      fail("features", "read_only is refused on a new pool (format = true): the kernel needs to write it first")
    end
    if r.length < r.block then
      fail("length", "%d sectors hold no whole data block of %d sectors", r.length, r.block)
    end
  end,
  before_create = {
    run = function(s, ctx) zero_metadata(ctx.name(s.metadata)) end,
    show = function(s, ctx) return ("dd if=/dev/zero of=%s bs=4096 count=1 conv=notrunc"):format(ctx.name(s.metadata)) end,
    when = function(s) return s.format == true end,
  },
  -- "0 10/512 3/32 - rw discard_passdown queue_if_no_space - 128" or Fail or Error
  status = function(w)
    local r = {transaction = math.tointeger(tonumber(w[1]))}
    if not r.transaction then return {mode = (w[1] or "error"):lower(), failed = w[1] == "Fail"} end
    local function frac(s)
      local a, b = (s or ""):match("^(%d+)/(%d+)$")
      return math.tointeger(tonumber(a)), math.tointeger(tonumber(b))
    end
    r.metadata_used, r.metadata_total = frac(w[2])
    r.data_used, r.data_total = frac(w[3])
    r.held_root = w[4] ~= "-" and math.tointeger(tonumber(w[4])) or nil
    r.mode = ({rw = "rw", ro = "ro", out_of_data_space = "out_of_data_space"})[w[5]] or w[5]
    r.discard = w[6]
    r.error_if_no_space = w[7] == "error_if_no_space"
    r.needs_check = w[8] == "needs_check"
    r.metadata_low_water = math.tointeger(tonumber(w[9]))
    return r
  end,
  messages = {
    --- pool:create_thin(id): a new, empty thin volume with this id (0 to 2^24-1).
    -- @function Device:create_thin
    -- @within Target messages
    create_thin = function(pool, n) return send(pool, ("create_thin %d"):format(id("create_thin", pool, "id", n))) end,
    --- pool:create_snap(id, origin_id[, origin_device]): a snapshot of the thin volume
    -- origin_id. An active origin must be suspended around it, as the kernel's
    -- documentation says: give its Device and it is (and is resumed, whatever happens).
    -- @function Device:create_snap
    -- @within Target messages
    create_snap = function(pool, n, origin, dev)
      local text = ("create_snap %d %d"):format(id("create_snap", pool, "id", n), id("create_snap", pool, "origin", origin))
      if n == origin then check.fail("create_snap", pool.name, "field 'id' must not be the origin's id (%d)", n) end
      if dev == nil then return send(pool, text) end
      if type(dev) ~= "table" or type(dev.suspend) ~= "function" then
        check.fail("create_snap", pool.name, "field 'origin_device' must be the origin's Device, got %s", type(dev))
      end
      local device = require "devmapper.device"
      local ok, err
      kernel.critical(function()
        dev:suspend()
        ok, err = pcall(send, pool, text)
        local rok, rerr = pcall(dev.resume, dev)
        if not rok then
          -- the snapshot is made: once the origin runs again, a failed resume is only a warning
          device.ensure_resumed(dev.name)
          local info = dev:info()
          if info and info.suspended and ok then ok, err = false, rerr
          elseif ok then kernel.warn(("create_snap: resuming %s failed (%s); it was resumed again"):format(dev.name, tostring(rerr))) end
        end
      end)
      if not ok then error(err, 0) end
    end,
    --- pool:delete(id): delete a thin volume and its data (irreversible; not while it is active).
    -- @function Device:delete
    -- @within Target messages
    delete = function(pool, n) return send(pool, ("delete %d"):format(id("delete", pool, "id", n))) end,
    --- pool:set_transaction_id(current, new): compare and swap the pool's 64-bit transaction id.
    -- @function Device:set_transaction_id
    -- @within Target messages
    set_transaction_id = function(pool, old, new)
      local max = math.maxinteger
      return send(pool, ("set_transaction_id %d %d"):format(id("set_transaction_id", pool, "current", old, max),
                                                           id("set_transaction_id", pool, "new", new, max)))
    end,
    --- pool:reserve_metadata_snap(): hold a copy of the metadata for reading (status: held_root).
    -- @function Device:reserve_metadata_snap
    -- @within Target messages
    reserve_metadata_snap = function(pool) return send(pool, "reserve_metadata_snap") end,
    --- pool:release_metadata_snap(): release it.
    -- @function Device:release_metadata_snap
    -- @within Target messages
    release_metadata_snap = function(pool) return send(pool, "release_metadata_snap") end,
  },
  MAX_ID = MAX_ID,
}

return target.define(decl)
