--- lua-devmapper: script Linux device-mapper from Lua.
-- @module devmapper
-- @usage local dm = require "devmapper"
local device = require "devmapper.device"
local kernel = require "devmapper.kernel"
local target = require "devmapper.target"
local snapshot = require "devmapper.snapshot"
local stack = require "devmapper.stack"

local dm = {
  _VERSION = "lua-devmapper scm",
  loop = require "devmapper.loop",
  table = require "devmapper.table",
  key = require "devmapper.key",
  luks = require "devmapper.luks",
  verity = require "devmapper.verity",
  snapshot = snapshot,
  thin = require "devmapper.thin",
  origin = target.get("snapshot-origin").builder,
  stack = stack,
  cleanup = stack.cleanup,
  create = device.create,
  device = device.open,
  list = device.list,
  scope = require("devmapper.scope").new,
  json = require "devmapper.json",
  --- Trace, dry-run and fault-injection knobs (see devmapper.kernel).
  kernel = kernel,
}

--- The device-mapper driver version, e.g. "4.47.0".
function dm.version() return kernel.call("dm_version") end

--- Target types the kernel has loaded: {linear = "1.4.0", ...}.
function dm.targets() return kernel.call("dm_targets") end

--- Facts about a block device: the article's `ls -l /dev | grep "7, *0"` done for you.
-- @param dev a path, "major:minor", a Loop or a Device
-- @treturn table {path, major, minor, sectors, logical_block_size, dm_name?, loop_backing?, holders}
function dm.blockdev(dev)
  if type(dev) == "table" then dev = dev.path end
  return kernel.blkdev(dev)
end

-- Every target type has its builder here, by name with '_' for '-':
-- dm.linear, dm.striped, dm.zero, dm.error, dm.crypt, dm.snapshot_origin, ...
return setmetatable(dm, {__index = function(_, k)
  local d = type(k) == "string" and target.get((k:gsub("_", "-")))
  return d and d.builder or nil
end})
