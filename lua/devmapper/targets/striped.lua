--- @module devmapper

--- striped: data spread over devices in chunks (dm-stripe.c:
-- <#stripes> <chunk> (<dev> <offset>)...). The length must divide by the
-- number of stripes, and each stripe's width by the chunk.
--
-- Built as dm.striped {chunk = sectors or size, dev, {dev, offset = n}, ..., length = ?}
-- @function striped
-- @within Target builders
-- @usage dm.striped {chunk = 16, l1, l2, {l3, offset = 2048}}
local check = require "devmapper.check"
local field = require "devmapper.field"
local target = require "devmapper.target"

local count = field.number {parser = "kstrto", bits = 32, min = 1}

local function width(r) return r.length // #r.stripes end

return target.define {
  type = "striped",
  params = {
    {"#stripes", count, count = "stripes"},
    {"chunk", field.number {parser = "kstrto", bits = 32, min = 1, sectors = true}},
    {"stripes", list = {{"dev", field.device}, {"offset", field.sector, default = 0}}, min = 1},
  },
  -- dm.striped {chunk = sectors or size, dev, {dev, offset = n}, ..., length = ?}
  new = function(opts)
    if type(opts) ~= "table" then return opts end
    local f, stripes, listed = {}, {}, 0
    for k, v in pairs(opts) do
      if math.type(k) == "integer" then listed = listed + 1 else f[k] = v end
    end
    for i, v in ipairs(opts) do
      if type(v) == "table" and getmetatable(v) == nil then
        for k in pairs(v) do
          if k ~= 1 and k ~= "offset" then
            check.fail("striped", nil, "stripe %d has no field %s: give {dev, offset = sectors}", i, check.quote(k))
          end
        end
        stripes[i] = {dev = v[1], offset = v.offset}
      else
        stripes[i] = {dev = v}
      end
    end
    if listed ~= #stripes then check.fail("striped", nil, "its devices must be listed from 1 without holes") end
    if #stripes > 0 and f.stripes ~= nil then
      check.fail("striped", nil, "field 'stripes' is given twice (as devices by position and by name)")
    end
    f.stripes = f.stripes or stripes
    return f
  end,
  -- the largest length every stripe can hold, in whole chunks
  length = function(r, ctx)
    local per
    for _, st in ipairs(r.stripes) do
      local room = ctx.facts(st.dev).sectors - st.offset
      per = per and math.min(per, room) or room
    end
    return (per // r.chunk) * r.chunk * #r.stripes
  end,
  check = function(r, _, fail)
    if not r.length then return end
    if #r.stripes > 0 and r.length % #r.stripes ~= 0 then
      fail("length", "%d must be divisible by the number of stripes (%d)", r.length, #r.stripes)
    end
    if width(r) % r.chunk ~= 0 then
      fail("length", "per-stripe width %d must be divisible by chunk (%d)", width(r), r.chunk)
    end
  end,
  areas = function(r)
    local a = {}
    for i, st in ipairs(r.stripes) do a[i] = {st.dev, st.offset, width(r), ("stripes[%d]"):format(i)} end
    return a
  end,
  -- "2 7:0 7:1 1 AA": stripes, their devices, then A (alive) or D (dead) for each
  status = function(w)
    local n = math.min(math.tointeger(tonumber(w[1])) or 0, #w)
    local st = {stripes = n, devices = {}, health = {}}
    for i = 1, n do st.devices[i] = w[1 + i] end
    local h = w[n + 3] or ""
    for i = 1, #h do st.health[i] = h:sub(i, i) == "A" and "alive" or "dead" end
    return st
  end,
}
