--- Targets: the segments a table is made of. Each type says how to format
-- and parse its parameters, its default length, and the kernel's rules
-- for it, so that a bad segment is refused before any ioctl.
local check = require "devmapper.check"
local size = require "devmapper.size"

local target = {types = {}}

local Segment = {__name = "devmapper.Target"}
Segment.__index = Segment
target.Segment = Segment

--- Register a target type.
-- spec = {params = f(seg, ctx) -> string, parse = f(words) -> fields,
--         length = f(seg, ctx) -> default sectors (optional),
--         check = f(seg, ctx, fail) (optional), devices = f(seg) -> list (optional)}
-- ctx.facts(dev) gives a device's facts, ctx.dev(dev) renders it in params.
function target.define(type_name, spec)
  target.types[type_name] = spec
end

--- Make a segment of a registered type from its fields.
function target.new(type_name, fields)
  fields.type = type_name
  if fields.length ~= nil then fields.length = size.sectors(fields.length, "length") end
  return setmetatable(fields, Segment)
end

function Segment:spec()
  return target.types[self.type] or target.types[false]
end

function Segment:devices()
  local f = self:spec().devices
  return f and f(self) or {}
end

function Segment:__tostring()
  local t = require("devmapper.table")
  return tostring(t {self})
end

-- A sector count or size string for an optional field.
local function sectors_opt(v, field)
  if v == nil then return nil end
  if math.type(v) == "integer" and v == 0 then return 0 end
  return size.sectors(v, field)
end
target.sectors_opt = sectors_opt

--- Refuse a parameter list of the wrong length when parsing.
function target.words(type_name, words, n, form)
  if #words ~= n then
    check.fail("table.parse", nil, "%s takes %d parameters (%s), got %d", type_name, n, form, #words)
  end
end

-- Unknown types (read back from the kernel): parameters kept verbatim.
target.define(false, {
  params = function(s) return s.params end,
  parse = function(_, raw) return {params = raw} end,
})

--- The rule for a segment over one device at an offset: it must end inside it.
function target.check_fits(s, ctx, fail)
  local f = ctx.facts(s.dev)
  if f and s.length and s.offset + s.length > f.sectors then
    fail("length", "must fit in the device: %d sectors at offset %d run past the end of %s (%d sectors)",
         s.length, s.offset, ctx.name(s.dev), f.sectors)
  end
end

--- linear: a range of one device.
-- @param dev a Loop, a Device, a path, "major:minor" (or, in a stack, a member's name)
-- @tparam[opt] table opts {offset = sectors or size, length = sectors or size}
-- @usage dm.linear(l1, {offset = 2048})
function target.linear(dev, opts)
  opts = opts or {}
  return target.new("linear", {dev = dev, offset = sectors_opt(opts.offset, "offset") or 0, length = opts.length})
end

target.define("linear", {
  params = function(s, ctx) return ctx.dev(s.dev) .. " " .. s.offset end,
  parse = function(w)
    target.words("linear", w, 2, "device offset")
    return {dev = w[1], offset = math.tointeger(tonumber(w[2]))}
  end,
  length = function(s, ctx) return ctx.facts(s.dev).sectors - s.offset end,
  devices = function(s) return {s.dev} end,
  check = function(s, ctx, fail)
    if s.dev == nil then fail("dev", "is required") end
    if math.type(s.offset) ~= "integer" or s.offset < 0 then fail("offset", "must be an integer >= 0") end
    target.check_fits(s, ctx, fail)
  end,
})

--- striped: data spread over several devices in chunks.
-- @tparam table opts {chunk = sectors, dev1, dev2, ..., length = ?}; a device may be {dev, offset = n}
-- @usage dm.striped {chunk = 16, l1, l2}
function target.striped(opts)
  local stripes = {}
  for i, d in ipairs(opts) do
    if type(d) == "table" and getmetatable(d) == nil and d[1] then
      stripes[i] = {dev = d[1], offset = sectors_opt(d.offset, "offset") or 0}
    else
      stripes[i] = {dev = d, offset = 0}
    end
  end
  local chunk = opts.chunk
  if type(chunk) == "string" then chunk = size.sectors(chunk, "chunk") end
  return target.new("striped", {chunk = chunk, stripes = stripes, length = opts.length})
end

target.define("striped", {
  params = function(s, ctx)
    local p = {#s.stripes, s.chunk}
    for _, st in ipairs(s.stripes) do p[#p + 1] = ctx.dev(st.dev) .. " " .. st.offset end
    return table.concat(p, " ")
  end,
  parse = function(w)
    local n = math.tointeger(tonumber(w[1]))
    target.words("striped", w, 2 + 2 * (n or 0), "#stripes chunk (device offset)...")
    local s = {chunk = math.tointeger(tonumber(w[2])), stripes = {}}
    for i = 1, n or 0 do
      s.stripes[i] = {dev = w[1 + 2 * i], offset = math.tointeger(tonumber(w[2 + 2 * i]))}
    end
    return s
  end,
  -- The largest length every stripe can hold, in whole chunks.
  length = function(s, ctx)
    if math.type(s.chunk) ~= "integer" or s.chunk <= 0 or #s.stripes == 0 then return nil end
    local per
    for _, st in ipairs(s.stripes) do
      local room = ctx.facts(st.dev).sectors - st.offset
      per = per and math.min(per, room) or room
    end
    return (per // s.chunk) * s.chunk * #s.stripes
  end,
  devices = function(s)
    local d = {}
    for i, st in ipairs(s.stripes) do d[i] = st.dev end
    return d
  end,
  check = function(s, ctx, fail)
    if #s.stripes == 0 then fail("stripes", "must name at least one device") end
    if math.type(s.chunk) ~= "integer" or s.chunk <= 0 then fail("chunk", "must be an integer > 0 (sectors)") end
    if not s.length then return end
    if s.length % #s.stripes ~= 0 then
      fail("length", "%d must be divisible by the number of stripes (%d)", s.length, #s.stripes)
    end
    local width = s.length // #s.stripes
    if width % s.chunk ~= 0 then
      fail("length", "per-stripe width %d must be divisible by chunk (%d)", width, s.chunk)
    end
    for i, st in ipairs(s.stripes) do
      if math.type(st.offset) ~= "integer" or st.offset < 0 then fail("stripes[" .. i .. "].offset", "must be >= 0") end
      local f = ctx.facts(st.dev)
      if f and st.offset + width > f.sectors then
        fail("stripes[" .. i .. "]", "must fit in the device: %d sectors at offset %d run past the end of %s (%d sectors)",
             width, st.offset, ctx.name(st.dev), f.sectors)
      end
    end
  end,
})

--- zero: reads return zeros, writes are discarded.
-- @param length sectors or a size
function target.zero(length)
  return target.new("zero", {length = length})
end

--- error: every I/O fails.
-- @param length sectors or a size
function target.error(length)
  return target.new("error", {length = length})
end

for _, t in ipairs {"zero", "error"} do
  target.define(t, {params = function() return "" end, parse = function(w)
    target.words(t, w, 0, "no parameters")
    return {}
  end})
end

return target
