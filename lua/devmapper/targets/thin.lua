--- @module devmapper

--- thin: a thin volume of a thin pool, which takes the pool's blocks as it
-- is written (dm-thin.c: <pool dev> <dev id> [<external origin dev>]).
-- The length is the volume's virtual size: the pool stores none. Built
-- from Lua (create ~= false), a device created with the segment first has
-- the pool make the volume if it does not exist yet (create_thin), as
-- lvcreate does; parsed from table text, the id must exist.
--
-- Built as dm.thin {pool = Device | path | member name, id = 0..2^24-1, length = virtual size,
-- origin = an external read-only origin (unwritten blocks read from it), create = true}
-- @function thin
-- @within Target builders
-- @usage dm.thin {pool = "pool", id = 1, length = "1GiB"}
local check = require "devmapper.check"
local core = require "devmapper.core"
local field = require "devmapper.field"
local kernel = require "devmapper.kernel"
local target = require "devmapper.target"

local MAX_ID = (1 << 24) - 1

-- The device-mapper name of the pool, from its path or major:minor.
local function pool_name(path)
  local n = path:match("^/dev/mapper/(.+)$")
  if n then return n end
  local f = kernel.blkdev(path)
  if not f.dm_name then check.fail("thin", path, "field 'pool' is not a device-mapper device") end
  return f.dm_name
end

-- create_thin, where the id is new; EEXIST says it is there already.
local function ensure_volume(s, ctx)
  local name = pool_name(ctx.name(s.pool))
  local ok, err = pcall(kernel.call, "dm_message", name, 0, ("create_thin %d"):format(s.id))
  if not ok and not (type(err) == "table" and err.errno == 17) then error(err, 0) end
end

return target.define {
  type = "thin",
  params = {
    {"pool", field.device},
    {"id", field.number {parser = "kstrto", max = MAX_ID}},
    {"origin", field.device, optional = true},
  },
  flags = {"create"},
  -- dm.thin {pool = Device | path | member name, id = 0..2^24-1, length = virtual size,
  -- origin = an external read-only origin (unwritten blocks read from it), create = true}
  new = function(opts) return target.fields("thin", opts, {"pool"}) end,
  check = function(r, ctx, fail)
    if r.origin ~= nil then
      local p, o = ctx.facts(r.pool), ctx.facts(r.origin)
      if (p and o and p.major == o.major and p.minor == o.minor) or r.origin == r.pool then
        fail("origin", "must not be the pool (%s)", ctx.name(r.pool))
      end
    end
  end,
  before_create = {
    run = ensure_volume,
    show = function(s, ctx)
      return ("dmsetup message %s 0 'create_thin %d'  # unless it exists"):format(ctx.name(s.pool), s.id)
    end,
    when = function(s) return not s.from_text and s.create ~= false end,
  },
  -- "<mapped sectors> <highest mapped sector>" ("-" when none), or Fail
  status = function(w)
    local mapped = math.tointeger(tonumber(w[1]))
    if not mapped then return {failed = w[1] == "Fail", state = w[1]} end
    return {mapped = mapped, highest = math.tointeger(tonumber(w[2]))}
  end,
}
