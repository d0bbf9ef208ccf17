--- @module devmapper

--- snapshot-origin: the origin as seen through its snapshots; each write
-- first saves the old data into the COW of every snapshot (dm-snap.c: <origin>).
--
-- Built as dm.origin(dev, {length = ?})
-- @function snapshot_origin
-- @within Target builders
-- @usage dm.origin("/dev/mapper/base-real")
local field = require "devmapper.field"
local target = require "devmapper.target"

return target.define {
  type = "snapshot-origin",
  params = {{"origin", field.device}},
  -- dm.origin(dev, {length = ?})
  new = function(dev, opts) return target.fields("snapshot-origin", opts, {}, {origin = dev}) end,
  length = function(r, ctx) return ctx.facts(r.origin).sectors end,
  areas = function(r) return {{r.origin, 0, r.length, "length"}} end,
}
