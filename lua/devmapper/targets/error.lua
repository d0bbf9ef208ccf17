--- @module devmapper

--- error: every I/O fails (dm-target.c's io_err: it ignores any parameters,
-- so none are taken here).
--
-- Built as dm.error(length)
-- @function error
-- @within Target builders
-- @usage dm.error(8)
local target = require "devmapper.target"

return target.define {
  type = "error",
  params = {},
  -- dm.error(length)
  new = function(length) return {length = length} end,
}
