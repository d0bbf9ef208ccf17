--- Tables: segments composed in order, starts computed, formatted exactly as
-- `dmsetup table` prints them, parsed back from that text, and checked
-- against the kernel's rules before any ioctl.
-- @module devmapper.table
local check = require "devmapper.check"
local field = require "devmapper.field"
local kernel = require "devmapper.kernel"
local size = require "devmapper.size"
local target = require "devmapper.target"

local Table = {__name = "devmapper.Table"}
Table.__index = Table

-- The kernel's largest device: its size in bytes must fit a signed 64-bit offset.
local MAX_SECTORS = math.maxinteger >> 9

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
-- @tparam[opt] boolean describe render devices as paths (and loop backing files)
-- @local
function M.context(lookup, lenient, describe)
  local cache = {}
  local ctx = {}
  local function key_of(dev)
    if type(dev) == "table" and dev.path then return dev.path end
    if type(dev) == "string" then
      if dev:match("^%d+:%d+$") then return dev end
      local sub = lookup and lookup(dev)
      if sub then return key_of(sub) end
      return dev
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
      local ok, f = pcall(kernel.blkdev, k, not describe)
      if not ok then
        if lenient then f = false else error(f, 0) end
      end
      cache[k] = f
    end
    return cache[k] or nil
  end
  -- A device as people read it, for messages (its path, read only then).
  function ctx.name(dev)
    if type(dev) == "table" and dev.path then return dev.path end
    local f = ctx.facts(dev)
    local ok, full = pcall(kernel.blkdev, f and (f.major .. ":" .. f.minor) or tostring(dev))
    return ok and full.path or tostring(dev)
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

-- The kernel's check across segments (validate_hardware_logical_block_alignment):
-- a bio aligned to the table's logical block size that spans a boundary
-- must split into pieces each target can take, and the table must end on one.
local function check_alignment(out, fail)
  local L = 1
  for _, s in ipairs(out) do L = math.max(L, s.lbs // 512) end
  if L == 1 then return end
  local next_start, remaining = 0, 0
  for i, s in ipairs(out) do
    local own = s.dev_lbs // 512
    if remaining < s.length and remaining % own ~= 0 then
      fail(i, s.type, "start", "%d is not aligned to the table's logical block size (%d bytes)", s.start, L * 512)
    end
    next_start = (next_start + s.length) % L
    remaining = next_start ~= 0 and L - next_start or 0
  end
  if remaining ~= 0 then
    fail(#out, out[#out].type, "length", "the table must end on its logical block size (%d bytes): it ends %d sectors past a boundary",
         L * 512, L - remaining)
  end
end

-- Starts, lengths and params of every segment, checked (strict) or as far as
-- can be shown (not strict). mode: "kernel", "show" or "compare" (see target.resolve).
-- Returns {{start, length, type, params, key, secure, ring}}; raises naming the segment.
-- ring: the keyring keys the segment names, {[description] = Key, or true for one already there}.
local function resolve(t, ctx, op, name, strict, mode)
  local out, start = {}, 0
  local function fail(i, ty, fieldname, fmt, ...)
    check.fail(op, name, "segment %d (%s): field '%s' " .. fmt, i, ty, fieldname, ...)
  end
  if strict and #t == 0 then check.fail(op, name, "table must have at least one segment") end
  for i, s in ipairs(t) do
    if getmetatable(s) ~= target.Segment then
      check.fail(op, name, "segment %d must be a target (dm.linear, ...), got %s", i, type(s))
    end
    local function segfail(fieldname, fmt, ...) fail(i, s.type, fieldname, fmt, ...) end
    if s.start ~= nil and strict and s.start ~= start then
      if i == 1 then segfail("start", "must be 0 (it is %d)", s.start) end
      segfail("start", "must be %d, where segment %d ends (%s of %d sectors)", start, i - 1,
              s.start > start and "a gap" or "an overlap", math.abs(s.start - start))
    end
    local at = s.start or start
    local decl = target.get(s.type)
    if strict and decl and decl.alone and #t > 1 then
      segfail("type", "%s must be the only segment of its table (the kernel's rule), and this table has %d", s.type, #t)
    end
    -- a type that stands for another (luks) is shown as itself where it cannot be expanded
    local ok, seg = pcall(s.expanded, s, ctx, segfail)
    if not ok then
      if strict then error(seg, 0) end
      seg = nil
    end
    seg = seg or s
    local r = target.resolve(seg, ctx, segfail, mode, strict)
    if strict and r.length > MAX_SECTORS - start then
      segfail("length", "%d makes the table end past sector %d (the largest device the kernel makes)", r.length, MAX_SECTORS)
    end
    out[i] = {start = at, length = r.length, type = seg.type, params = r.params, key = r.key,
              secure = seg:secret() or nil, ring = r.ring, lbs = r.lbs, dev_lbs = r.dev_lbs}
    start = at + (r.length or 0)
  end
  if strict then check_alignment(out, fail) end
  for _, s in ipairs(out) do s.lbs, s.dev_lbs = nil, nil end
  return out
end

--- The targets as the kernel will get them, after every check.
-- @tparam[opt] table ctx from M.context
-- @tparam[opt] string op for error messages
-- @tparam[opt] string name the device, for error messages
function Table:targets(ctx, op, name)
  return resolve(self, ctx or M.context(), op or "table", name, true, "kernel")
end

--- Check against the kernel's rules; raises an error naming segment, field and rule.
function Table:validate(ctx, op, name)
  resolve(self, ctx or M.context(), op or "table", name, true, "show")
  return self
end

--- Run what each segment needs before a device is created with the table
-- (a snapshot's COW zeroed).
-- @local
function Table:before_create(ctx)
  for _, s in ipairs(self) do s:before_create(ctx) end
end

--- The command lines before_create stands for (for plans).
-- @local
function Table:before_create_lines(ctx)
  local l = {}
  for _, s in ipairs(self) do l[#l + 1] = s:before_create(ctx, true) end
  return l
end

--- Total length in sectors.
function Table:length()
  local n = 0
  for _, s in ipairs(resolve(self, M.context(nil, true), "table", nil, false, "show")) do n = s.start + (s.length or 0) end
  return n
end

local function format(targets)
  local l = {}
  for i, s in ipairs(targets) do
    l[i] = ("%d %s %s"):format(s.start, s.length and ("%d"):format(s.length) or "?", s.type)
           .. (s.params ~= "" and " " .. s.params or "")
  end
  return table.concat(l, "\n")
end

--- The table as `dmsetup table` prints it: major:minor, numbers in plain
-- decimal, options in the kernel's order; keys as zeros (as dmsetup shows them).
-- @tparam[opt] table ctx a resolution context (the default reads devices as needed)
function Table:text(ctx)
  return format(resolve(self, ctx or M.context(nil, true), "table", nil, false, "show"))
end

Table.__tostring = Table.text
Table.__json = Table.text -- dmsetup's text: keys as keyring references or zeros, never bytes

--- Same, with device paths (and loop backing files) instead of major:minor.
-- @tparam[opt] function lookup for names of stack members
function Table:describe(lookup)
  return format(resolve(self, M.context(lookup, true, true), "table", nil, false, "show"))
end

--- The text two tables compare by: devices as major:minor, keys by
-- fingerprint (never their bytes), so that equal text means the same mapping.
-- @tparam[opt] table ctx
function Table:compare_text(ctx)
  return format(resolve(self, ctx or M.context(nil, true), "table", nil, false, "compare"))
end

function Table.__eq(a, b) return a:compare_text() == b:compare_text() end

--- Whether targets resolved for the kernel (Table:targets) are what the
-- kernel holds (core.dm_table with {keys = true}), compared as the kernel
-- prints them: the module formats exactly that text, so no parsing is needed.
-- Keys compare by value (never as text). Some targets end their text with
-- a blank (thin-pool's "0 "), which is no part of a parameter.
-- @local
function M.same_targets(mine, live)
  if #mine ~= #live then return false end
  for i, a in ipairs(mine) do
    local b = live[i]
    if a.start ~= b.start or a.length ~= b.length or a.type ~= b.type or a.key ~= b.key then return false end
    -- some targets (flakey) end their text with a blank: it is no difference
    local text = b.params:gsub("%s+$", "")
    if a.params ~= text then
      -- the kernel prints values of its own choosing for some (integrity's journal size)
      local decl = target.get(a.type)
      if not (decl and decl.same and decl.same(a.params, text)) then return false end
    end
  end
  return true
end

-- A table line's start or length: plain decimal, as the kernel's u64 fields.
local function u64(word, what, n)
  if not word:match("^%d+$") then
    check.fail("table.parse", nil, "line %d: field '%s' must be a decimal integer (digits only), got %s", n, what,
               check.quote(word))
  end
  local v = size.digits(word)
  if not v then
    check.fail("table.parse", nil, "line %d: field '%s' must be at most %d", n, what, math.maxinteger)
  end
  return v
end

--- Parse `dmsetup table` text into a Table: one segment per line
-- ("start length type params"), read as dmsetup reads it: blank lines and
-- lines that start with '#' are skipped, and a '#' in the parameters starts
-- a comment. Every word is read as the kernel reads it; a word the kernel
-- would read otherwise, or ignore, is refused, and so is a NUL byte (C
-- would end the text there).
-- @tparam string text
-- @treturn Table
-- @usage dm.table.parse "0 8192 striped 2 16 7:0 0 7:1 0"
function M.parse(text)
  if type(text) ~= "string" then check.fail("table.parse", nil, "expected a string, got %s", type(text)) end
  local t = setmetatable({}, Table)
  local n = 0
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    if line:find("\0", 1, true) then check.fail("table.parse", nil, "line %d holds a NUL byte", n) end
    if line:match("%S") and not line:match("^%s*#") then
      local start, length, ty, rest = line:match("^%s*(%S+)%s+(%S+)%s+(%S+)%s*(.-)%s*$")
      if not start then
        check.fail("table.parse", nil, "line %d: expected 'start length type parameters'", n)
      end
      rest = rest:gsub("#.*", ""):gsub("%s+$", "")   -- a comment, from the parameters on
      if #ty > 15 then check.fail("table.parse", nil, "line %d: target type must be at most 15 bytes", n) end
      local like = target.get((ty:lower():gsub("_", "-")))
      if like and like.type ~= ty then
        check.fail("table.parse", nil, "line %d: unknown target type %s: the kernel's is '%s'", n, check.quote(ty), like.type)
      end
      start, length = u64(start, "start", n), u64(length, "length", n)
      local function fail(fieldname, fmt, ...)
        check.fail("table.parse", nil, "line %d (%s): field '%s' " .. fmt, n, ty, fieldname, ...)
      end
      local seg = target.parse(ty, field.split(rest), fail, rest)
      seg.start, seg.length = start, length
      t[#t + 1] = seg
    end
  end
  return t
end

--- Turn the kernel's read-back targets {{start, length, type, params, key}} into a Table,
-- each target's words read by its declaration (no text in between).
-- @tparam table targets from core.dm_table
-- @tparam boolean masked the keys were masked (read without {keys = true})
-- @local
function M.from_targets(targets, masked)
  local t = setmetatable({}, Table)
  for i, s in ipairs(targets) do
    local function fail(fieldname, fmt, ...)
      check.fail("table", nil, "segment %d (%s) as the kernel printed it: field '%s' " .. fmt, i, s.type, fieldname, ...)
    end
    local words = field.split(s.params)
    if s.key then
      for j, w in ipairs(words) do if w == "<key>" then words[j] = s.key end end
    end
    local seg = target.parse(s.type, words, fail, s.params, masked)
    seg.start, seg.length = s.start, s.length
    t[i] = seg
  end
  return t
end

M.Table = Table
--- Whether x is a Table.
-- @function is_table
-- @treturn boolean
M.is_table = is_table

return setmetatable(M, {__call = function(_, segs) return new(segs) end})
