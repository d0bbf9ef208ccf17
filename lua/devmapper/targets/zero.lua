--- @module devmapper

--- zero: reads return zeros, writes are discarded (dm-zero.c: no parameters).
--
-- Built as dm.zero(length)
-- @function zero
-- @within Target builders
-- @usage dm.zero("1GiB")
local target = require "devmapper.target"

return target.define {
  type = "zero",
  params = {},
  -- dm.zero(length)
  new = function(length) return {length = length} end,
}
