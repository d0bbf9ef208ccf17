--- @module devmapper

--- linear: a range of one device (dm-linear.c: <dev> <offset>).
--
-- Built as dm.linear(dev, {offset = sectors or size, length = sectors or size})
-- @function linear
-- @within Target builders
-- @usage dm.linear(l1, {offset = 2048, length = "1MiB"})
local field = require "devmapper.field"
local target = require "devmapper.target"

return target.define {
  type = "linear",
  params = {
    {"dev", field.device},
    {"offset", field.sector, default = 0},
  },
  -- dm.linear(dev, {offset = sectors or size, length = sectors or size})
  new = function(dev, opts) return target.fields("linear", opts, {}, {dev = dev}) end,
  length = function(r, ctx) return ctx.facts(r.dev).sectors - r.offset end,
  areas = function(r) return {{r.dev, r.offset, r.length, "offset"}} end,
}
