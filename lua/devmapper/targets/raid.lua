--- @module devmapper

--- raid: md's RAID personalities under device-mapper (dm-raid.c:
-- <raid_type> <#raid_params> <chunk> [<param>...] <#raid_devs> (<metadata> <data>)...).
-- The builder's `type` and `devices` are the segment's raid_type and raid_devs
-- (a Segment's devices() is a method).
-- #raid_params counts the chunk and every word after it (each option name
-- and each value). The kernel prints the parameters back in its own order
-- (sync, nosync, rebuild..., daemon_sleep, min_recovery_rate,
-- max_recovery_rate, write_mostly..., max_write_behind, stripe_cache,
-- region_size, raid10_copies, raid10_format, delta_disks, data_offset,
-- journal_dev, journal_mode), names and raid types in lower case, and
-- only what was given: a region size left out is chosen (and logged), not
-- printed. Device indexes (rebuild, write_mostly) are the kernel's: 0 is
-- the first device pair (devices[1] in Lua).
-- What the kernel would read back otherwise is refused: a chunk other than
-- 0 for raid1 (ignored), region_size 0 (printed as the size it chose),
-- max_write_behind (halved: a reload of the kernel's own table halves it
-- again), raid10_use_near_sets (counted in the printed #raid_params but not
-- printed, so the kernel's own table does not read back), a write_mostly
-- index given twice (printed once), stripe_cache below chunk/2 (raised).
-- A stripe_cache below md's 256 may read back larger (md drops cache
-- entries only as far as it can): tables compare equal when the live value
-- is at least the one asked for.
--
-- Built as dm.raid {type = "raid1" | "raid5_ls" | ..., devices = {{metadata = dev or "-", data = dev}, ...},
-- chunk = sectors (raid0/4/5/6/10; 0 or absent for raid1), region_size =, sync = true, nosync = true,
-- rebuild = idx or {idx, ...}, write_mostly = idx or {...}, daemon_sleep = ms, min_recovery_rate =,
-- max_recovery_rate = (KiB/s per device), stripe_cache =, raid10_copies =, raid10_format =,
-- delta_disks =, data_offset =, journal_dev =, journal_mode =, length =}
-- Device indexes are the kernel's (0 is devices[1]).
-- @function raid
-- @within Target builders
-- @usage dm.raid {type = "raid1", devices = {{metadata = m1, data = d1}, {metadata = m2, data = d2}}}
local check = require "devmapper.check"
local field = require "devmapper.field"
local target = require "devmapper.target"

-- The kernel's raid types: level (4 and 5 are one personality), parity
-- devices, and the fewest devices a reshape may leave (minimal_devs).
local TYPES = {
  raid0 = {0, 0, 2}, raid1 = {1, 0, 2},
  raid10 = {10, 0, 2}, raid10_near = {10, 0, 2}, raid10_far = {10, 0, 2}, raid10_offset = {10, 0, 2},
  raid4 = {5, 1, 2}, raid5_n = {5, 1, 2}, raid5_ls = {5, 1, 2}, raid5_rs = {5, 1, 2}, raid5_la = {5, 1, 2},
  raid5_ra = {5, 1, 2},
  raid6_zr = {6, 2, 4}, raid6_nr = {6, 2, 4}, raid6_nc = {6, 2, 4}, raid6_n_6 = {6, 2, 4}, raid6_ls_6 = {6, 2, 4},
  raid6_rs_6 = {6, 2, 4}, raid6_la_6 = {6, 2, 4}, raid6_ra_6 = {6, 2, 4},
}
local TYPE_NAMES = {}
for k in pairs(TYPES) do TYPE_NAMES[#TYPE_NAMES + 1] = k end
table.sort(TYPE_NAMES)
-- what lvm calls them (lvcreate --type raid5 is raid5_ls, raid6 raid6_zr)
local LVM = {raid5 = "raid5_ls", raid6 = "raid6_zr"}

local MAX_DEVICES = 253

-- The raid type: the kernel matches it in any case and prints its own name.
local raid_type = {}
function raid_type.text(w)
  local l = w:lower()
  if TYPES[l] then return l end
  if LVM[l] then
    return nil, ("must be a kernel raid type: lvm's %s is %s (the kernel's: %s)"):format(l, LVM[l],
                                                                                 table.concat(TYPE_NAMES, ", "))
  end
  return nil, ("must be a raid type (%s)"):format(table.concat(TYPE_NAMES, ", "))
end
function raid_type.lua(v)
  if type(v) ~= "string" then return nil, ("must be a raid type name, got %s"):format(type(v)) end
  return raid_type.text(v)
end
function raid_type.format(v) return v end

-- kstrtoint: an int, an optional '+' (a '-' only where a value may be negative)
local int = field.number {parser = "kstrto", bits = 32, max = 0x7fffffff}
local sectors = field.number {parser = "kstrto", bits = 32, max = 0x7fffffff, sectors = true}
local index = field.number {parser = "kstrto", bits = 32, max = MAX_DEVICES - 1}

local signed = {}
function signed.text(w)
  local s, d = w:match("^([+-]?)(%d+)$")
  local v = d and #d <= 10 and math.tointeger(tonumber(d))
  if not v or v > 0x7fffffff then return nil, "must be a decimal integer with an optional sign, within an int" end
  return s == "-" and -v or v
end
function signed.lua(v)
  if math.type(v) ~= "integer" then return nil, ("must be an integer, got %s"):format(type(v)) end
  if v < -0x7fffffff or v > 0x7fffffff then return nil, "must be within an int" end
  return v
end
function signed.format(v) return ("%d"):format(v) end

local function choice(names)
  local set, kind = {}, {}
  for _, n in ipairs(names) do set[n] = true end
  function kind.text(w)
    local l = w:lower()
    if not set[l] then return nil, ("must be one of %s"):format(table.concat(names, ", ")) end
    return l
  end
  function kind.lua(v)
    if type(v) ~= "string" then return nil, ("must be one of %s, got %s"):format(table.concat(names, ", "), type(v)) end
    return kind.text(v)
  end
  function kind.format(v) return v end
  return kind
end

-- Every raid parameter after the chunk, in the kernel's printing order.
local ORDER = {"sync", "nosync", "rebuild", "daemon_sleep", "min_recovery_rate", "max_recovery_rate", "write_mostly",
               "max_write_behind", "stripe_cache", "region_size", "raid10_copies", "raid10_format", "delta_disks",
               "data_offset", "journal_dev", "journal_mode"}
local FLAGS = {sync = true, nosync = true}
local MANY = {rebuild = true, write_mostly = true}
local VALUES = {
  rebuild = index, write_mostly = index, daemon_sleep = int, min_recovery_rate = int, max_recovery_rate = int,
  stripe_cache = int, region_size = sectors, raid10_copies = int, raid10_format = choice {"near", "far", "offset"},
  delta_disks = signed, data_offset = sectors, journal_dev = field.device,
  journal_mode = choice {"writethrough", "writeback"},
}
-- known to the kernel, refused here: why
local REFUSED = {
  max_write_behind = "is not supported: the kernel halves it (max_write_behind 256 reads back as 128, and a "
                     .. "reload of that table halves it again)",
  raid10_use_near_sets = "is not supported: the kernel counts it in the #raid_params it prints but does not "
                         .. "print it, so its own table does not read back",
}
-- what each level takes (the kernel's RAID*_VALID_FLAGS)
local VALID = {}
local function valid(level, names)
  VALID[level] = {}
  for n in names:gmatch("%S+") do VALID[level][n] = true end
end
valid(0, "data_offset")
valid(1, "sync nosync rebuild write_mostly daemon_sleep min_recovery_rate max_recovery_rate max_write_behind "
         .. "region_size delta_disks data_offset")
valid(10, "sync nosync rebuild daemon_sleep min_recovery_rate max_recovery_rate region_size raid10_copies "
          .. "raid10_format delta_disks data_offset")
valid(5, "sync nosync rebuild daemon_sleep min_recovery_rate max_recovery_rate stripe_cache region_size "
         .. "delta_disks data_offset journal_dev journal_mode")
valid(6, "sync rebuild daemon_sleep min_recovery_rate max_recovery_rate stripe_cache region_size "
         .. "delta_disks data_offset journal_dev journal_mode")

local KNOWN = "chunk, " .. table.concat(ORDER, ", ")

-- The raid parameters as a map {chunk =, sync = true, rebuild = {0, 2}, region_size = n, ...}:
-- read from the kernel's counted words, given from Lua, printed in the kernel's order.
local params = {options = true, always = true}

local function unknown(n)
  return ("unknown raid parameter %s (known: %s)"):format(check.quote(n), KNOWN)
end

-- add value v (already read) of option name to m, or the rule broken
local function put(m, name, v)
  if MANY[name] then
    m[name] = m[name] or {}
    for _, x in ipairs(m[name]) do
      if x == v then return ("option '%s' is given twice for index %d"):format(name, v) end
    end
    table.insert(m[name], v)
    table.sort(m[name])
  else
    if m[name] ~= nil then return ("option '%s' is given twice"):format(name) end
    m[name] = v
  end
end

function params.text_list(words)
  if #words == 0 then
    return nil, "must hold the chunk size: #raid_params counts it (0 for raid1)"
  end
  local chunk, why = sectors.text(words[1])
  if not chunk then return nil, "chunk " .. why end
  local m, i = {chunk = chunk}, 2
  while i <= #words do
    local w = words[i]
    local name = w:lower()
    if REFUSED[name] then return nil, ("option '%s' %s"):format(name, REFUSED[name]) end
    if FLAGS[name] then
      if m[name] then return nil, ("option '%s' is given twice"):format(name) end
      m[name] = true
      i = i + 1
    elseif VALUES[name] then
      local vw = words[i + 1]
      if vw == nil then
        return nil, ("option '%s' needs a value: #raid_params counts each option and each value"):format(name)
      end
      if name == "journal_mode" and m.journal_dev == nil then
        return nil, "option 'journal_mode' must come after option 'journal_dev' (the kernel needs it first)"
      end
      local v, vwhy = VALUES[name].text(vw)
      if v == nil then return nil, ("option '%s' %s, got %s"):format(name, vwhy, check.quote(vw)) end
      local dup = put(m, name, v)
      if dup then return nil, dup end
      i = i + 2
    else
      return nil, unknown(w)
    end
  end
  return m
end

-- one entry k = x of a map from Lua into m, or the rule broken
local function entry(m, k, x)
  if type(k) ~= "string" then return ("key %s is not a parameter name"):format(tostring(k)) end
  if REFUSED[k] then return ("option '%s' %s"):format(k, REFUSED[k]) end
  if k == "chunk" then
    local c, why = sectors.lua(x, "chunk")
    if c == nil then return "chunk " .. why end
    m.chunk = c
  elseif FLAGS[k] then
    if type(x) ~= "boolean" then return ("option '%s' must be true or false, got %s"):format(k, type(x)) end
    m[k] = x or nil
  elseif MANY[k] then
    local list = type(x) == "table" and getmetatable(x) == nil and x or {x}
    local n = 0
    for _ in pairs(list) do n = n + 1 end
    if n ~= #list then return ("option '%s' must be a device index or a list of them"):format(k) end
    for _, e in ipairs(list) do
      local iv, why = index.lua(e, k)
      if iv == nil then return ("option '%s' index %s"):format(k, why) end
      local dup = put(m, k, iv)
      if dup then return dup end
    end
  elseif VALUES[k] then
    local val, why = VALUES[k].lua(x, k)
    if val == nil then return ("option '%s' %s"):format(k, why) end
    m[k] = val
  else
    return unknown(k)
  end
end

function params.lua(v)
  if type(v) ~= "table" then return nil, ("must be a map of raid parameters, got %s"):format(type(v)) end
  local m = {}
  for k, x in pairs(v) do
    local why = entry(m, k, x)
    if why then return nil, why end
  end
  if m.chunk == nil then return nil, "chunk is required (0 for raid1)" end
  if m.journal_mode and not m.journal_dev then return nil, "option 'journal_mode' needs option 'journal_dev'" end
  return m
end

function params.format_list(m, ctx)
  local out = {tostring(m.chunk)}
  for _, n in ipairs(ORDER) do
    local v = m[n]
    if v == true then
      out[#out + 1] = n
    elseif MANY[n] and v then
      for _, x in ipairs(v) do out[#out + 1] = n; out[#out + 1] = tostring(x) end
    elseif v ~= nil then
      out[#out + 1] = n
      out[#out + 1] = n == "journal_dev" and (ctx and ctx.dev(v) or tostring(v)) or VALUES[n].format(v)
    end
  end
  return out
end

local function facts(ctx, d)
  local ok, f = pcall(ctx.facts, d)
  return ok and f or nil
end

-- Devices holding data, and the data stripes a length divides into.
local function geometry(r)
  local t = TYPES[r.raid_type]
  local n = #r.raid_devs
  local copies = r.raid_params.raid10_copies or 2
  return t[1], t[2], n, copies
end

-- The sectors each data device holds for a length (dev_sectors), or nil when it does not divide.
local function per_device(r, length)
  local level, parity, n, copies = geometry(r)
  if level == 1 then return length end
  if level == 10 then
    if (length * copies) % n ~= 0 then return nil end
    local dev = length * copies // n
    if (n * dev) % copies ~= 0 then return nil end
    return dev
  end
  if length % (n - parity) ~= 0 then return nil end
  return length // (n - parity)
end

local function message(name)
  return function(dev, ...)
    if select("#", ...) > 0 then
      check.fail(name, dev.name, "takes no arguments (the kernel reads only the action's name)")
    end
    return dev:message(name)
  end
end

local HEALTH = {A = "alive", a = "syncing", D = "dead", ["-"] = "missing"}

return target.define {
  type = "raid",
  params = {
    {"raid_type", raid_type},
    {"raid_params", params},
    {"#raid_devs", field.number {parser = "scanf", bits = 32, min = 1, max = MAX_DEVICES}, count = "raid_devs"},
    {"raid_devs", list = {{"metadata", field.device_or_none, default = "-"}, {"data", field.device_or_none}}, min = 1},
  },
  extra = {"type", "devices", "chunk", "sync", "nosync", "rebuild", "daemon_sleep", "min_recovery_rate", "max_recovery_rate",
           "write_mostly", "max_write_behind", "stripe_cache", "region_size", "raid10_copies", "raid10_format",
           "delta_disks", "data_offset", "journal_dev", "journal_mode"},
  -- dm.raid {type = "raid1" | "raid5_ls" | ..., devices = {{metadata = dev or "-", data = dev}, ...},
  -- chunk = sectors (raid0/4/5/6/10; 0 or absent for raid1), region_size =, sync = true, nosync = true,
  -- rebuild = idx or {idx, ...}, write_mostly = idx or {...}, daemon_sleep = ms, min_recovery_rate =,
  -- max_recovery_rate = (KiB/s per device), stripe_cache =, raid10_copies =, raid10_format =,
  -- delta_disks =, data_offset =, journal_dev =, journal_mode =, length =}
  -- Device indexes are the kernel's (0 is devices[1]).
  new = function(opts)
    local f = target.fields("raid", opts, {})
    if f.devices ~= nil then
      if f.raid_devs ~= nil then check.fail("raid", nil, "field 'devices' is given twice (also as raid_devs)") end
      f.raid_devs, f.devices = f.devices, nil
    end
    if f.type ~= nil then
      if f.raid_type ~= nil then check.fail("raid", nil, "field 'type' is given twice (also as raid_type)") end
      f.raid_type, f.type = f.type, nil
    end
    local p = {}
    for _, k in ipairs {"chunk", table.unpack(ORDER)} do
      if f[k] ~= nil then
        if f.raid_params ~= nil then
          check.fail("raid", nil, "field '%s' is given twice (also in raid_params)", k)
        end
        p[k] = f[k]
        f[k] = nil
      end
    end
    if f.raid_params == nil then
      if p.chunk == nil then
        local level = type(f.raid_type) == "string" and TYPES[f.raid_type:lower()]
        if level and level[1] == 1 then
          p.chunk = 0
        elseif level then
          check.fail("raid", nil, "field 'chunk' is required for %s (sectors, a power of 2 of at least 8)", f.raid_type)
        end
      end
      -- each value checked now, naming its field
      for k, v in pairs(p) do
        local why = entry({}, k, v)
        if why then check.fail("raid", nil, "field '%s' %s", k, (why:gsub("^option '[^']*' ", ""):gsub("^chunk ", ""))) end
      end
      f.raid_params = p
    end
    return f
  end,
  length = function(r, ctx)
    local level, parity, n, copies = geometry(r)
    local per
    for _, d in ipairs(r.raid_devs) do
      if d.data ~= "-" then
        local s = ctx.facts(d.data).sectors
        per = per and math.min(per, s) or s
      end
    end
    if not per then check.fail("raid", nil, "field 'raid_devs' must hold at least one data device") end
    local chunk = r.raid_params.chunk
    if chunk > 0 then per = per - per % chunk end
    if level == 1 then return per end
    if level == 10 then
      local len = per * n // copies
      while len > 0 and not per_device(r, len) do len = len - 1 end
      return len
    end
    return per * (n - parity)
  end,
  check = function(r, ctx, fail)
    local level, parity, n, copies = geometry(r)
    local p = r.raid_params
    if n <= parity then
      fail("raid_devs", "%s needs more than %d device%s (it has %d)", r.raid_type, parity, parity == 1 and "" or "s", n)
    end
    if level == 6 and n < 4 then
      fail("raid_devs", "%s needs at least 4 devices (md's raid6 runs no fewer; it has %d)", r.raid_type, n)
    end
    if level == 10 then
      for i, d in ipairs(r.raid_devs) do
        if d.metadata == "-" then
          fail(("raid_devs[%d].metadata"):format(i), "is required for raid10: without a metadata device for each "
               .. "device md gets no layout and refuses to run the set")
        end
      end
    end
    if level == 1 then
      if p.chunk ~= 0 then fail("chunk", "must be 0 for raid1 (the kernel ignores it and prints 0), got %d", p.chunk) end
    elseif p.chunk < 8 or p.chunk & (p.chunk - 1) ~= 0 then
      fail("chunk", "must be a power of 2 of at least 8 sectors for %s, got %d", r.raid_type, p.chunk)
    end
    for _, name in ipairs(ORDER) do
      if p[name] ~= nil and not VALID[level][name] then
        local takes = {}
        for _, o in ipairs(ORDER) do if VALID[level][o] then takes[#takes + 1] = o end end
        fail(name, "is not a parameter of %s (it takes %s)", r.raid_type, table.concat(takes, ", "))
      end
    end
    for _, name in ipairs {"rebuild", "write_mostly"} do
      for _, i in ipairs(p[name] or {}) do
        if i >= n then fail(name, "index %d is out of range: the raid set has %d devices (0 to %d)", i, n, n - 1) end
      end
    end
    if p.sync and p.nosync then fail("nosync", "excludes sync") end
    if p.rebuild and (p.sync or p.nosync) then fail("rebuild", "excludes %s", p.sync and "sync" or "nosync") end
    if p.write_mostly and #p.write_mostly >= n then
      fail("write_mostly", "can not name every device (%d of %d)", #p.write_mostly, n)
    end
    if p.max_recovery_rate and p.max_recovery_rate ~= 0 and (p.min_recovery_rate or 0) > p.max_recovery_rate then
      fail("min_recovery_rate", "%d must not be above max_recovery_rate (%d)", p.min_recovery_rate, p.max_recovery_rate)
    end
    if level == 10 and (copies < 2 or copies > n) then
      fail("raid10_copies", "must be from 2 to the number of devices (%d), got %d%s", n, copies,
           p.raid10_copies and "" or " (the default)")
    end
    if p.delta_disks and (p.delta_disks == 0 or math.abs(p.delta_disks) > MAX_DEVICES - TYPES[r.raid_type][3]) then
      fail("delta_disks", "must be from 1 to %d devices, added or (negative) removed, got %d",
           MAX_DEVICES - TYPES[r.raid_type][3], p.delta_disks)
    end
    if p.data_offset and p.data_offset ~= 0 and (p.data_offset < 32 or p.data_offset % 8 ~= 0) then
      fail("data_offset", "must be 0 or at least 32 sectors and a multiple of 8 (a page), got %d", p.data_offset)
    end
    if p.stripe_cache then
      if p.stripe_cache < p.chunk // 2 then
        fail("stripe_cache", "%d is below chunk/2 (%d): the kernel raises it to that", p.stripe_cache, p.chunk // 2)
      end
      if p.stripe_cache <= 16 or p.stripe_cache > 32768 then
        fail("stripe_cache", "must be from 17 to 32768 entries, got %d", p.stripe_cache)
      end
    end
    if p.region_size then
      local rs = p.region_size
      if rs == 0 then
        fail("region_size", "0 would have the kernel choose one and print it: leave region_size out for that")
      end
      if rs & (rs - 1) ~= 0 then fail("region_size", "must be a power of 2, got %d", rs) end
      if rs > r.length then fail("region_size", "%d is larger than the target (%d sectors)", rs, r.length) end
      if rs < r.length >> 21 then
        fail("region_size", "%d is below %d: the bitmap holds at most 2^21 regions of the target", rs, r.length >> 21)
      end
      if rs < p.chunk then fail("region_size", "%d is smaller than the chunk (%d)", rs, p.chunk) end
    end
    local any = false
    for i, d in ipairs(r.raid_devs) do
      if d.data == "-" then
        if d.metadata ~= "-" then fail(("raid_devs[%d].data"):format(i), "must be a device when its metadata is one") end
        for _, x in ipairs(p.rebuild or {}) do
          if x == i - 1 then fail("rebuild", "index %d names raid_devs[%d], which has no data device", x, i) end
        end
      else
        any = true
      end
    end
    if not any then fail("raid_devs", "must hold at least one data device") end
    -- a device twice (mirrored onto itself, or metadata over data) is never what is meant
    local seen = {}
    local function once(d, label)
      if d == "-" then return end
      local ok, key = pcall(ctx.dev, d)
      key = ok and key or tostring(d)
      if seen[key] then fail(label, "%s is also %s: each device of a raid set must be another", ctx.name(d), seen[key]) end
      seen[key] = label
    end
    for i, d in ipairs(r.raid_devs) do
      once(d.metadata, ("raid_devs[%d].metadata"):format(i))
      once(d.data, ("raid_devs[%d].data"):format(i))
    end
    if p.journal_dev then once(p.journal_dev, "journal_dev") end
    if p.journal_dev then
      local f = facts(ctx, p.journal_dev)
      if f and f.sectors < 8192 then
        fail("journal_dev", "%s (%d sectors) is smaller than the 4 MiB a journal needs", ctx.name(p.journal_dev), f.sectors)
      end
    end
    if not per_device(r, r.length) then
      fail("length", "%d must divide into the %s's %d data device%s (%d device%s, %s)", r.length, r.raid_type,
           level == 10 and n or n - parity, (level == 10 and n or n - parity) == 1 and "" or "s", n, n == 1 and "" or "s",
           level == 10 and copies .. " copies" or parity .. " parity")
    end
    for i, d in ipairs(r.raid_devs) do
      local f = d.metadata ~= "-" and facts(ctx, d.metadata)
      if f and f.sectors == 0 then fail(("raid_devs[%d].metadata"):format(i), "%s is empty (0 sectors)", ctx.name(d.metadata)) end
    end
  end,
  -- the kernel's iterate_devices: each data device from 0, for the sectors each holds
  areas = function(r)
    local a = {}
    local per = per_device(r, r.length)
    for i, d in ipairs(r.raid_devs) do
      if d.data ~= "-" then a[#a + 1] = {d.data, 0, per, ("raid_devs[%d].data"):format(i)} end
    end
    return a
  end,
  more_devices = function(s)
    local p = s.raid_params
    return type(p) == "table" and p.journal_dev and {p.journal_dev} or {}
  end,
  -- a stripe_cache below md's own 256 may read back larger (see above)
  same = function(mine, live)
    local m, lv = mine:match(" stripe_cache (%d+) "), live:match(" stripe_cache (%d+) ")
    if not m or not lv then return false end
    return tonumber(lv) >= tonumber(m)
      and mine:gsub(" stripe_cache %d+ ", " ", 1) == live:gsub(" stripe_cache %d+ ", " ", 1)
  end,
  -- "raid1 2 AA 32768/32768 idle 0 0 -": type, devices, a health character each
  -- (A alive and in sync, a alive but not in sync, D dead, - none), sync
  -- progress, the sync action, mismatches found by check, data offset,
  -- journal health
  status = function(w)
    local n = math.tointeger(tonumber(w[2] or "")) or 0
    local st = {raid_type = w[1], devices = n, health = {}, health_chars = w[3] or "",
                action = w[5], mismatches = math.tointeger(tonumber(w[6] or "")),
                data_offset = math.tointeger(tonumber(w[7] or ""))}
    local h = w[3] or ""
    for i = 1, #h do st.health[i] = HEALTH[h:sub(i, i)] or h:sub(i, i) end
    local cur, total = (w[4] or ""):match("^(%d+)/(%d+)$")
    -- (digits past an integer's range are no sync progress)
    cur, total = math.tointeger(tonumber(cur or "")), math.tointeger(tonumber(total or ""))
    if cur and total then
      st.sync = {current = cur, total = total, fraction = total > 0 and cur / total or 1}
    end
    st.journal = w[8] and (w[8] == "-" and "none" or HEALTH[w[8]] or w[8])
    st.dead = h:find("D", 1, true) ~= nil
    st.degraded = h:find("[D%-]") ~= nil
    st.in_sync = st.sync ~= nil and cur >= total and st.action == "idle" and not h:find("[aD]")
    return st
  end,
  -- dev:check(), dev:repair(), ...: the kernel's sync actions (dmsetup message <dev> 0 <action>)

  --- dev:check(): read every stripe and count the mismatches (status: mismatches), fixing none (dmsetup message <dev> 0 check).
  -- @function Device:check
  -- @within Target messages

  --- dev:repair(): read every stripe and rewrite what does not match (dmsetup message <dev> 0 repair).
  -- @function Device:repair
  -- @within Target messages

  --- dev:idle(): stop the sync action that runs (dmsetup message <dev> 0 idle).
  -- @function Device:idle
  -- @within Target messages

  --- dev:frozen(): stop the sync action that runs and start none until `idle` (dmsetup message <dev> 0 frozen).
  -- @function Device:frozen
  -- @within Target messages

  --- dev:resync(): resynchronise the whole array (dmsetup message <dev> 0 resync).
  -- @function Device:resync
  -- @within Target messages

  --- dev:recover(): rebuild the devices that need it (dmsetup message <dev> 0 recover).
  -- @function Device:recover
  -- @within Target messages

  --- dev:reshape(): refused, with the reason: the kernel takes no such message
  -- (a reshape starts when a table with new devices, delta_disks or a new layout is loaded).
  -- @function Device:reshape
  -- @within Target messages

  messages = {
    check = message("check"), repair = message("repair"), idle = message("idle"), frozen = message("frozen"),
    resync = message("resync"), recover = message("recover"),
    reshape = function(dev)
      check.fail("reshape", dev.name, "is not a message the kernel takes (it answers EINVAL): a reshape starts "
                 .. "when a table with new devices, delta_disks or a new layout is loaded")
    end,
  },
}
