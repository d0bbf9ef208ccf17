--- lua-devmapper: script Linux device-mapper from Lua.
--
-- The facade: devices (`dm.create`, `dm.device`, `dm.list`), every target
-- type's builder (`dm.linear`, `dm.crypt`, ...; the section below), and the
-- modules it hands out: `dm.loop` (@{devmapper.loop}), `dm.table`
-- (@{devmapper.table}), `dm.key` (@{devmapper.key}), `dm.luks`
-- (@{devmapper.luks}), `dm.verity` (@{devmapper.verity}), `dm.snapshot`
-- (@{devmapper.snapshot}), `dm.thin` (@{devmapper.thin}), `dm.stack`
-- (@{devmapper.stack}), `dm.json` (@{devmapper.json}) and `dm.kernel`
-- (@{devmapper.kernel}). A Device's methods are in @{devmapper.device}.
--
-- Errors are raised as objects with fields `op`, `name`, `errno` and
-- `message`; `tostring` gives one line naming the operation, the device and
-- the kernel's reason.
-- @module devmapper
-- @alias dm
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
  --- The snapshot-origin target's builder (the same as dm.snapshot_origin).
  -- @function origin
  -- @param dev the origin: a Loop, a Device, a path or "major:minor"
  -- @tparam[opt] table opts {length = sectors or a size}
  -- @treturn Target
  -- @usage dm.origin("/dev/mapper/base-real")
  origin = target.get("snapshot-origin").builder,
  stack = stack,
  --- After a crash: remove what a killed script left under a prefix
  -- (see @{devmapper.stack.cleanup}).
  -- @function cleanup
  -- @tparam string prefix
  -- @usage dm.cleanup("demo")
  cleanup = stack.cleanup,
  --- Create a device with a table and make it live (dmsetup create; see
  -- @{devmapper.device.create}).
  -- @function create
  -- @tparam string name 1-127 bytes, no '/'
  -- @param t a Table, a single target, or dmsetup table text
  -- @tparam[opt] table opts {uuid =, readonly =, lookup =}
  -- @treturn Device
  -- @usage local dev = dm.create("tiger", dm.striped {chunk = 16, l1, l2})
  create = device.create,
  --- The Device of an existing device-mapper device; raises if there is none
  -- (see @{devmapper.device.open}).
  -- @function device
  -- @tparam string name
  -- @treturn Device
  device = device.open,
  --- All devices, in one ioctl: {{name=, major=, minor=}, ...}.
  -- @function list
  -- @treturn table
  list = device.list,
  --- Open a scope: everything made while it is open is undone when it closes
  -- (see @{devmapper.scope.new}).
  -- @function scope
  -- @treturn Scope
  -- @usage do local s <close> = dm.scope() ... end
  scope = require("devmapper.scope").new,
  json = require "devmapper.json",
  -- Trace, dry-run and fault-injection knobs (see devmapper.kernel).
  kernel = kernel,
}

--- The device-mapper driver version, e.g. "4.47.0".
-- @treturn string
function dm.version() return kernel.call("dm_version") end

--- Target types the kernel has loaded: {linear = "1.4.0", ...}.
-- @treturn table
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
-- dm.progress: the default progress callback (devmapper.progress), nil
-- unless set: dm.progress = function(p) ... end.
local progress = require "devmapper.progress"
return setmetatable(dm, {__index = function(_, k)
  if k == "progress" then return progress.default end
  local d = type(k) == "string" and target.get((k:gsub("_", "-")))
  return d and d.builder or nil
end, __newindex = function(t, k, v)
  if k ~= "progress" then return rawset(t, k, v) end
  if v ~= nil and type(v) ~= "function" then
    require("devmapper.check").fail("progress", nil, "dm.progress must be a function or nil, got %s", type(v))
  end
  progress.default = v
end})
