--- @module devmapper

--- flakey: a device that works for `up` seconds, then misbehaves for `down`
-- seconds, over and over (dm-flakey.c: <dev> <offset> <up interval> <down
-- interval> [<#features> <feature>...]). While down it fails every I/O,
-- unless a feature says otherwise: drop_writes (writes are acknowledged and
-- lost, reads work), error_writes (writes fail, reads work), corrupt_bio_byte
-- <Nth byte> <r|w> <value> <flags> (that byte of matching bios is
-- replaced). Debian 12's kernel (6.1) has no error_reads and no random
-- corruption features: they are refused. The kernel prints the feature
-- count back always (0 when there are none); its status is empty.
-- There is no flakey message: dev:reconfigure{...} reloads the table with
-- changed fields (how the kernel's documentation says to change them).
--
-- Built as dm.flakey {dev, offset = 0, up = seconds, down = seconds,
-- features = {"drop_writes" | "error_writes", corrupt_bio_byte = {byte, "r" | "w", value, flags = 0}}, length =}
-- @function flakey
-- @within Target builders
-- @usage dm.flakey {l1, up = 5, down = 1, features = {"drop_writes"}}
-- @usage dm.flakey {l1, up = 0, down = 60, features = {corrupt_bio_byte = {32, "r", 255, 0}}}
local check = require "devmapper.check"
local field = require "devmapper.field"
local target = require "devmapper.target"

-- dm_read_arg: sscanf("%u%c") within the argument's bounds
local interval = field.number {parser = "scanf", bits = 32}
local nth_byte = field.number {parser = "scanf", bits = 32, min = 1}
local byte_value = field.number {parser = "scanf", bits = 32, max = 255}
local bio_flags = field.number {parser = "scanf", bits = 32}

-- corrupt_bio_byte's four words: {byte =, direction = "r" | "w", value =, flags =}
local corrupt = {}
local SUBS = {{"byte", nth_byte}, {"direction"}, {"value", byte_value}, {"flags", bio_flags}}
local DIRS = {r = "r", w = "w", read = "r", write = "w"}

function corrupt.text(words)
  local v = {}
  for i, sub in ipairs(SUBS) do
    local w = words[i]
    if sub[1] == "direction" then
      -- strcasecmp with "r" and "w"
      local d = w:lower()
      if d ~= "r" and d ~= "w" then return nil, ("direction must be r or w, got %s"):format(check.quote(w)) end
      v.direction = d
    else
      local x, why = sub[2].text(w)
      if x == nil then return nil, ("%s %s, got %s"):format(sub[1], why, check.quote(w)) end
      v[sub[1]] = x
    end
  end
  return v
end

function corrupt.lua(t)
  if type(t) ~= "table" then
    return nil, ("must be a table {byte, direction, value, flags}, got %s"):format(type(t))
  end
  for k in pairs(t) do
    local ok = math.type(k) == "integer" and k >= 1 and k <= 4
    for _, sub in ipairs(SUBS) do ok = ok or k == sub[1] end
    if not ok then return nil, ("has no field %s (its fields: byte, direction, value, flags)"):format(check.quote(k)) end
  end
  local v = {}
  for i, sub in ipairs(SUBS) do
    local x = t[sub[1]]
    if t[i] ~= nil then
      if x ~= nil then return nil, ("field %s is given twice (by position and by name)"):format(sub[1]) end
      x = t[i]
    end
    if x == nil and sub[1] == "flags" then x = 0 end
    if x == nil then return nil, ("needs its %s"):format(sub[1]) end
    if sub[1] == "direction" then
      local d = type(x) == "string" and DIRS[x:lower()]
      if not d then return nil, ("direction must be \"r\" or \"w\" (\"read\" or \"write\"), got %s"):format(tostring(x)) end
      v.direction = d
    else
      local n, why = sub[2].lua(x, sub[1])
      if n == nil then return nil, sub[1] .. " " .. why end
      v[sub[1]] = n
    end
  end
  return v
end

function corrupt.format(v) return {tostring(v.byte), v.direction, tostring(v.value), tostring(v.flags)} end

local features = field.options {
  order = {"drop_writes", "error_writes", "corrupt_bio_byte"},
  values = {corrupt_bio_byte = corrupt},
  spaced = {corrupt_bio_byte = 4},
  fold = "all", always = true, count_optional = true, max = 6,
}

local decl = {
  type = "flakey",
  params = {
    {"dev", field.device},
    {"offset", field.sector, default = 0},
    {"up", interval},
    {"down", interval},
    {"features", features},
  },
  -- dm.flakey {dev, offset = 0, up = seconds, down = seconds,
  -- features = {"drop_writes" | "error_writes", corrupt_bio_byte = {byte, "r" | "w", value, flags = 0}}, length =}
  new = function(opts) return target.fields("flakey", opts, {"dev"}) end,
  length = function(r, ctx) return ctx.facts(r.dev).sectors - r.offset end,
  areas = function(r) return {{r.dev, r.offset, r.length, "offset"}} end,
  check = function(r, _, fail)
    if r.up + r.down == 0 then fail("down", "and field 'up' are both 0: the total interval must be more than 0") end
    if r.up + r.down > 0xffffffff then
      fail("down", "%d and up %d add up to more than 2^32-1 seconds (the kernel's interval overflows)", r.down, r.up)
    end
    local f = r.features
    if f.drop_writes and f.error_writes then fail("features", "may hold drop_writes or error_writes, not both") end
    local c = f.corrupt_bio_byte
    if c and c.direction == "w" and (f.drop_writes or f.error_writes) then
      fail("features", "%s can not go with corrupt_bio_byte on writes (w): the writes never reach it",
           f.drop_writes and "drop_writes" or "error_writes")
    end
  end,
  -- the kernel reports nothing while it runs
  status = function() return {} end,
}

--- dev:reconfigure{up = 0, down = 10, features = {...}}: the device reloaded with changed fields.
-- @function Device:reconfigure
-- @within Target messages
decl.messages = {reconfigure = target.reconfigure("flakey")}

return target.define(decl)
