--- @module devmapper

--- delay: reads, writes and flushes held back by a number of milliseconds,
-- each class to a device area of its own (dm-delay.c: exactly 3, 6 or 9
-- words: <dev> <offset> <delay> [<write dev> <write offset> <write delay>
-- [<flush dev> <flush offset> <flush delay>]]). With 3 words the one class
-- is all of them; with 6 the write class is the flushes' too. The kernel
-- prints back as many words as it was given, so a segment keeps its form.
-- Its status is the number of bios held back now, per class.
--
-- Built as dm.delay {dev, offset = 0, delay = ms, write = {dev, offset = 0, delay = ms},
-- flush = {dev, offset = 0, delay = ms}, length =}. Without `write`, every
-- class is the first (3 words); `flush` without `write` makes the write
-- class the first's, written out (9 words).
-- @function delay
-- @within Target builders
-- @usage dm.delay {l1, delay = 100}
-- @usage dm.delay {l1, delay = 0, write = {l2, delay = 500}, flush = {l2, delay = 1000}}
local check = require "devmapper.check"
local field = require "devmapper.field"
local target = require "devmapper.target"

-- sscanf("%u%c"): milliseconds, digits only
local ms = field.number {parser = "scanf", bits = 32}

local CLASSES = {"write", "flush"}

-- The classes a segment has: read (always), write and flush when given.
local function classes(r)
  local out = {{"", r.dev, r.offset}}
  for _, c in ipairs(CLASSES) do
    if r[c .. "_dev"] ~= nil then out[#out + 1] = {c .. "_", r[c .. "_dev"], r[c .. "_offset"]} end
  end
  return out
end

-- {dev, offset =, delay =} (or a device alone) as the class's flat fields.
local function class_fields(f, c, v)
  if type(v) ~= "table" or getmetatable(v) ~= nil then
    check.fail("delay", nil, "field '%s' must be a table {dev, offset = sectors, delay = ms}, got %s", c, type(v))
  end
  for k in pairs(v) do
    if k ~= 1 and k ~= "dev" and k ~= "offset" and k ~= "delay" then
      check.fail("delay", nil, "field '%s' has no field %s (its fields: dev, offset, delay)", c, check.quote(k))
    end
  end
  if v[1] ~= nil and v.dev ~= nil then check.fail("delay", nil, "field '%s.dev' is given twice (by position and by name)", c) end
  for _, k in ipairs {"dev", "offset", "delay"} do
    if f[c .. "_" .. k] ~= nil then
      check.fail("delay", nil, "field '%s_%s' is given twice (in '%s' and by itself)", c, k, c)
    end
  end
  f[c .. "_dev"], f[c .. "_offset"], f[c .. "_delay"] = v.dev or v[1], v.offset or 0, v.delay
  if f[c .. "_delay"] == nil then check.fail("delay", nil, "field '%s.delay' is required (milliseconds)", c) end
end

local decl = {
  type = "delay",
  word_counts = {3, 6, 9},
  form = "<dev> <offset> <delay> [<write dev> <write offset> <write delay> [<flush dev> <flush offset> <flush delay>]]",
  params = {
    {"dev", field.device},
    {"offset", field.sector, default = 0},
    {"delay", ms},
    {"write_dev", field.device, optional = true},
    {"write_offset", field.sector, optional = true},
    {"write_delay", ms, optional = true},
    {"flush_dev", field.device, optional = true},
    {"flush_offset", field.sector, optional = true},
    {"flush_delay", ms, optional = true},
  },
  extra = {"write", "flush"},
  -- dm.delay {dev, offset = 0, delay = ms, write = {dev, offset = 0, delay = ms},
  -- flush = {dev, offset = 0, delay = ms}, length =}. Without `write`, every
  -- class is the first (3 words); `flush` without `write` makes the write
  -- class the first's, written out (9 words).
  new = function(opts)
    local f = target.fields("delay", opts, {"dev"})
    local w, fl = f.write, f.flush
    f.write, f.flush = nil, nil
    if w ~= nil then class_fields(f, "write", w) end
    if fl ~= nil then
      if w == nil and f.write_dev == nil then
        f.write_dev, f.write_offset, f.write_delay = f.dev, f.offset or 0, f.delay
      end
      class_fields(f, "flush", fl)
    end
    return f
  end,
  length = function(r, ctx)
    local len
    for _, c in ipairs(classes(r)) do
      local room = ctx.facts(c[2]).sectors - c[3]
      len = len and math.min(len, room) or room
    end
    return len
  end,
  check = function(r, _, fail)
    -- a class is all three fields or none, and flush needs write (the kernel counts words)
    for _, c in ipairs(CLASSES) do
      local n = 0
      for _, k in ipairs {"dev", "offset", "delay"} do if r[c .. "_" .. k] ~= nil then n = n + 1 end end
      if n ~= 0 and n ~= 3 then
        fail(c .. "_dev", "%s_dev, %s_offset and %s_delay go together: the kernel takes 3, 6 or 9 words", c, c, c)
      end
    end
    if r.flush_dev ~= nil and r.write_dev == nil then
      fail("flush_dev", "needs the write class before it (the kernel reads 9 words: read, write, flush)")
    end
  end,
  areas = function(r)
    local a = {}
    for _, c in ipairs(classes(r)) do a[#a + 1] = {c[2], c[3], r.length, c[1] .. "offset"} end
    return a
  end,
  -- "0 2 0": bios held back now (reads, writes, flushes)
  status = function(w)
    local n = function(x) return math.tointeger(tonumber(x or "")) end
    return {reads = n(w[1]), writes = n(w[2]), flushes = n(w[3])}
  end,
}

--- dev:reconfigure{delay = 0, write = {...}}: the device reloaded with new delays.
-- @function Device:reconfigure
-- @within Target messages
decl.messages = {reconfigure = target.reconfigure("delay")}

return target.define(decl)
