--- Tables: segments composed in order, starts computed, formatted exactly as
-- `dmsetup table` prints them, parsed back from that text, and checked
-- against the kernel's rules before any ioctl.
local check = require "devmapper.check"
local kernel = require "devmapper.kernel"
local target = require "devmapper.target"

local Table = {__name = "devmapper.Table"}
Table.__index = Table

local M = {}

local function is_table(x) return getmetatable(x) == Table end

-- Composition computes starts: a segment taken from a parsed table loses its own.
local function unplaced(s)
  if s.start == nil then return s end
  local c = {}
  for k, v in pairs(s) do c[k] = v end
  c.start = nil
  return setmetatable(c, target.Segment)
end

--- Build a table from segments (or other tables, whose segments are spliced in).
-- @tparam table segs an array of segments made by dm.linear, dm.striped, ...
-- @treturn Table
-- @usage dm.table { dm.linear(l1, {offset = 2048}), dm.linear(l2) }
local function new(segs)
  local t = setmetatable({}, Table)
  if getmetatable(segs) == target.Segment then segs = {segs} end
  if type(segs) ~= "table" then check.fail("table", nil, "expected an array of segments, got %s", type(segs)) end
  for i, s in ipairs(segs) do
    if is_table(s) then
      for _, x in ipairs(s) do t[#t + 1] = unplaced(x) end
    elseif getmetatable(s) == target.Segment then
      t[#t + 1] = unplaced(s)
    else
      check.fail("table", nil, "segment %d must be a target (dm.linear, dm.striped, ...), got %s", i, type(s))
    end
  end
  return t
end

--- A resolution context: how devices named in segments become facts.
-- @tparam[opt] function lookup(name) for names that are not paths or
-- major:minor (a stack's members); returns a Loop, Device, path or nil
-- @tparam[opt] boolean lenient render unknown devices by name instead of raising
function M.context(lookup, lenient, describe)
  local cache = {}
  local ctx = {}
  local function key_of(dev)
    if type(dev) == "table" and dev.path then return dev.path end
    if type(dev) == "string" then
      if dev:sub(1, 1) == "/" or dev:match("^%d+:%d+$") then return dev end
      local sub = lookup and lookup(dev)
      if sub then return key_of(sub) end
    end
    return nil
  end
  function ctx.facts(dev)
    local k = key_of(dev)
    if not k then
      if lenient then return nil end
      check.fail("table", nil, "unknown device %s (give a Loop, a Device, a path or major:minor)", tostring(dev))
    end
    if cache[k] == nil then
      local ok, f = pcall(kernel.blkdev, k)
      if not ok then
        if lenient then f = false else error(f, 0) end
      end
      cache[k] = f
    end
    return cache[k] or nil
  end
  -- A device as people read it, for messages.
  function ctx.name(dev)
    local f = ctx.facts(dev)
    return f and f.path or tostring(dev)
  end
  function ctx.dev(dev)
    local f = ctx.facts(dev)
    if not f then return type(dev) == "string" and dev or "?" end
    if describe then
      local s = f.path or (f.major .. ":" .. f.minor)
      if f.loop_backing then s = s .. " (" .. f.loop_backing .. ")" end
      return s
    end
    return f.major .. ":" .. f.minor
  end
  return ctx
end

-- Starts, lengths and params of every segment, checked.
-- Returns {{start, length, type, params, key}}; raises naming the segment.
local function resolve(t, ctx, op, name, strict)
  local out, start = {}, 0
  if strict and #t == 0 then check.fail(op, name, "table must have at least one segment") end
  for i, s in ipairs(t) do
    local spec = s:spec()
    local function fail(field, fmt, ...)
      check.fail(op, name, "segment %d (%s): field '%s' " .. fmt, i, s.type, field, ...)
    end
    if s.start ~= nil and strict and s.start ~= start then
      if i == 1 then fail("start", "must be 0 (it is %d)", s.start) end
      fail("start", "must be %d, where segment %d ends (%s of %d sectors)", start, i - 1,
           s.start > start and "a gap" or "an overlap", math.abs(s.start - start))
    end
    local length = s.length
    if length == nil and spec.length then
      local ok, l = pcall(spec.length, s, ctx)
      if ok then length = l elseif strict then error(l, 0) end
    end
    if strict then
      -- The target's own rules first: a bad chunk explains a missing length.
      local seg = setmetatable({length = length}, {__index = s})
      if spec.check then spec.check(seg, ctx, fail) end
      if length == nil then fail("length", "is required for this target") end
      if math.type(length) ~= "integer" or length <= 0 then fail("length", "must be > 0 (it is %s)", tostring(length)) end
    end
    out[i] = {start = s.start or start, length = length, type = s.type, params = spec.params(s, ctx), key = s.key}
    start = (s.start or start) + (length or 0)
  end
  return out
end

--- The targets as the kernel will get them, after every check.
-- @tparam[opt] table ctx from M.context
-- @tparam[opt] string op, name for error messages
function Table:targets(ctx, op, name)
  ctx = ctx or M.context()
  ctx.kernel = true
  return resolve(self, ctx, op or "table", name, true)
end

--- Run each segment's preparation for the kernel (a crypt key goes into the
-- keyring); `undo` takes it back after a failed ioctl.
function Table:prepare(undo)
  for _, s in ipairs(self) do
    local f = s:spec()[undo and "unprepare" or "prepare"]
    if f then f(s) end
  end
end

--- Check against the kernel's rules; raises an error naming field and rule.
function Table:validate(ctx, op, name)
  self:targets(ctx, op, name)
  return self
end

--- Total length in sectors.
function Table:length()
  local n = 0
  for _, s in ipairs(resolve(self, M.context(nil, true), "table", nil, false)) do n = s.start + (s.length or 0) end
  return n
end

local function format(targets)
  local l = {}
  for i, s in ipairs(targets) do
    l[i] = ("%d %s %s"):format(s.start, s.length and tostring(s.length) or "?", s.type)
           .. (s.params ~= "" and " " .. s.params or "")
  end
  return table.concat(l, "\n")
end

--- The table as `dmsetup table` prints it (major:minor, one line per segment).
function Table:__tostring()
  return format(resolve(self, M.context(nil, true), "table", nil, false))
end

--- Same, with device paths (and loop backing files) instead of major:minor.
-- @tparam[opt] function lookup for names of stack members
function Table:describe(lookup)
  return format(resolve(self, M.context(lookup, true, true), "table", nil, false))
end

function Table.__eq(a, b) return tostring(a) == tostring(b) end

--- Parse `dmsetup table` text (one segment per line) into a Table.
-- @tparam string text
-- @treturn Table
-- @usage dm.table.parse "0 8192 striped 2 16 7:0 0 7:1 0"
function M.parse(text)
  if type(text) ~= "string" then check.fail("table.parse", nil, "expected a string, got %s", type(text)) end
  local t = setmetatable({}, Table)
  local n = 0
  for line in text:gmatch("[^\n]+") do
    if line:match("%S") then
      n = n + 1
      local start, length, ty, rest = line:match("^%s*(%d+)%s+(%d+)%s+(%S+)%s*(.-)%s*$")
      if not start then
        check.fail("table.parse", nil, "line %d: expected 'start length type params', got %q", n, line)
      end
      local words = {}
      for w in rest:gmatch("%S+") do words[#words + 1] = w end
      local spec = target.types[ty] or target.types[false]
      local fields = spec.parse(words, rest)
      fields.start, fields.length = math.tointeger(tonumber(start)), math.tointeger(tonumber(length))
      t[n] = target.new(ty, fields)
    end
  end
  return t
end

--- Turn the kernel's read-back targets {{start, length, type, params}} into a Table.
function M.from_targets(targets)
  local l = {}
  for i, s in ipairs(targets) do l[i] = ("%d %d %s %s"):format(s.start, s.length, s.type, s.params) end
  local t = M.parse(table.concat(l, "\n"))
  for i, s in ipairs(targets) do t[i].key = s.key end -- read with {keys = true}
  return t
end

M.Table = Table
M.is_table = is_table

return setmetatable(M, {__call = function(_, segs) return new(segs) end})
