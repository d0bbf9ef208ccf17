--- @module devmapper

--- era: the origin passed through, with the era in which each block was
-- last written kept on a metadata device (dm-era-target.c: <metadata dev>
-- <origin dev> <block size>), for finding what changed since a backup.
-- Messages: dev:checkpoint() (a new era), dev:take_metadata_snap() and
-- dev:drop_metadata_snap() (a metadata snapshot for era_invalidate and
-- era_dump to read while the device runs). Status: metadata blocks used and
-- total, the current era and the held metadata root.
-- Before a device is created with an era segment built from Lua, the
-- metadata's superblock is zeroed, so that the kernel formats a new store
-- (unless reuse = true); a segment parsed from table text opens the store
-- it names as it is.
--
-- Built as dm.era {metadata =, origin =, block_size = sectors or size, length =, reuse = false}
-- @function era
-- @within Target builders
-- @usage dm.era {metadata = l2, origin = l1, block_size = 128}
local field = require "devmapper.field"
local target = require "devmapper.target"

-- DM_ERA_METADATA_BLOCK_SIZE: the superblock is the first 4096 bytes
local SUPERBLOCK = 8

local function zero_superblock() return target.get("snapshot").zero_cow end

local decl = {
  type = "era",
  params = {
    {"metadata", field.device},
    {"origin", field.device},
    -- sscanf("%u%c"); the kernel takes a multiple of 8 sectors, more than 0
    {"block_size", field.number {parser = "scanf", bits = 32, min = 8, sectors = true}},
  },
  flags = {"reuse"},
  -- dm.era {metadata =, origin =, block_size = sectors or size, length =, reuse = false}
  new = function(opts) return target.fields("era", opts, {}) end,
  length = function(r, ctx) return ctx.facts(r.origin).sectors end,
  -- the kernel checks nothing of the origin's size (it gives the whole device as
  -- its area); past the end I/O fails, so the module checks the length fits
  areas = function(r) return {{r.origin, 0, r.length, "length"}} end,
  check = function(r, ctx, fail)
    if r.block_size % 8 ~= 0 then fail("block_size", "%d must be a multiple of 8 sectors", r.block_size) end
    local m, o = ctx.facts(r.metadata), ctx.facts(r.origin)
    if m and o and m.major == o.major and m.minor == o.minor then
      fail("metadata", "must not be the origin (%s)", ctx.name(r.origin))
    end
  end,
  before_create = {
    run = function(s, ctx) zero_superblock()(ctx.name(s.metadata), SUPERBLOCK) end,
    show = function(s, ctx)
      return ("dd if=/dev/zero of=%s bs=512 count=%d conv=notrunc"):format(ctx.name(s.metadata), SUPERBLOCK)
    end,
    when = function(s) return not s.from_text and not s.reuse end,
  },
  -- "8 96/4096 3 -": metadata block size (sectors), metadata blocks used/total,
  -- the current era, the held metadata root ("-": none)
  status = function(w)
    local n = function(x) return math.tointeger(tonumber(x or "")) end
    local used, total = (w[2] or ""):match("^(%d+)/(%d+)$")
    return {metadata_block_sectors = n(w[1]), metadata_used = n(used), metadata_total = n(total),
            era = n(w[3]), held_root = w[4] ~= "-" and n(w[4]) or nil}
  end,
}

-- The kernel's three messages, one word each.
local function say(word) return function(dev) dev:message(word) end end
decl.messages = {
  --- dev:checkpoint(): close the current era and start the next.
  -- @function Device:checkpoint
  -- @within Target messages
  checkpoint = say("checkpoint"),
  --- dev:take_metadata_snap(): a snapshot of the metadata, for tools to read (its root in the status).
  -- @function Device:take_metadata_snap
  -- @within Target messages
  take_metadata_snap = say("take_metadata_snap"),
  --- dev:drop_metadata_snap(): let the metadata snapshot go.
  -- @function Device:drop_metadata_snap
  -- @within Target messages
  drop_metadata_snap = say("drop_metadata_snap"),
}

return target.define(decl)
