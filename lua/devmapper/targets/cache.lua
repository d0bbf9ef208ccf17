--- @module devmapper

--- cache: a fast device in front of a slow one (dm-cache-target.c:
-- <metadata> <cache> <origin> <block size> <#features> <feature>...
-- <policy> <#policy args> <policy arg>...). The kernel keeps every word
-- after the three devices as it was given and prints them back so (case,
-- order and all); text read here keeps its words the same way, and a table
-- built from Lua prints the features in the kernel's status order.
--
-- The metadata device must hold cache metadata or start with a zeroed
-- 4 KiB block (the kernel formats it then). Nothing here zeroes it: a
-- writeback cache's metadata says which blocks of the cache are newer than
-- the origin, and losing it loses those writes. Zero it yourself for a
-- new cache (a fresh sparse file is zeroed).
--
-- Built as dm.cache {metadata =, cache =, origin =, block = sectors or a size (32KiB to 1GiB, a
-- multiple of 32KiB), mode = "writeback" | "writethrough" | "passthrough" (the kernel's
-- default is writeback), features = {"metadata2", "no_discard_passdown"}, policy = "smq",
-- policy_args = {migration_threshold = 2048}, length =}
-- @function cache
-- @within Target builders
-- @usage dm.cache {metadata = m, cache = c, origin = o, block = "64KiB", mode = "writethrough"}
local check = require "devmapper.check"
local field = require "devmapper.field"
local target = require "devmapper.target"

-- Words read from text, kept as written: the kernel prints them back so.
local Verbatim = {__name = "devmapper.cache.words"}
local function verbatim(value, words) return setmetatable(value, {__index = Verbatim, words = words}) end
local function words_of(v)
  local mt = getmetatable(v)
  return mt and mt.__index == Verbatim and mt.words
end

local MODES = {"writeback", "writethrough", "passthrough"}
local features_known = {metadata2 = true, writethrough = true, passthrough = true, writeback = true,
                        no_discard_passdown = true}

-- the features, as parse_features takes them (strcasecmp), at most 3
local features = field.options {
  order = {"metadata2", "writethrough", "passthrough", "writeback", "no_discard_passdown"},
  fold = true, max = 3, always = true,
}
local map_features = features.lua
local function mode_rule(m)
  local n = 0
  for _, x in ipairs(MODES) do if m[x] then n = n + 1 end end
  if n > 1 then return "may hold only one of writeback, writethrough, passthrough" end
end
function features.lua(v)
  if words_of(v) then return v end
  local m, why = map_features(v)
  if not m then return nil, why end
  why = mode_rule(m)
  if why then return nil, why end
  return m
end
function features.text_list(words)
  local m, given = {}, {}
  for _, w in ipairs(words) do
    local l = w:lower()
    if not features_known[l] then
      return nil, ("unknown feature %s (known: metadata2, writethrough, passthrough, writeback, no_discard_passdown)")
                  :format(check.quote(w))
    end
    if given[l] then return nil, ("feature '%s' is given twice"):format(l) end
    given[l], m[l] = true, true
  end
  local why = mode_rule(m)
  if why then return nil, why end
  return verbatim(m, table.move(words, 1, #words, 1, {}))
end
local format_features = features.format_list
function features.format_list(m) return words_of(m) or format_features(m) end

-- policy arguments: <key> <value> pairs, as set_config_values takes them
local policy_args = {options = true, always = true, max = 1024}
function policy_args.text_list(words)
  if #words % 2 == 1 then return nil, "must be <key> <value> pairs (an odd number of words was given)" end
  local pairs_ = {}
  for i = 1, #words, 2 do pairs_[#pairs_ + 1] = {words[i], words[i + 1]} end
  return verbatim(pairs_, table.move(words, 1, #words, 1, {}))
end
function policy_args.lua(v)
  if v == nil then return {} end
  if words_of(v) then return v end
  if type(v) ~= "table" then return nil, ("must be a map {key = value}, got %s"):format(type(v)) end
  local keys = {}
  for k, x in pairs(v) do
    if type(k) ~= "string" then return nil, ("keys must be names, got %s"):format(type(k)) end
    local why = field.word_rule(k)
    if why then return nil, ("key %s %s"):format(check.quote(k), why) end
    if math.type(x) ~= "integer" or x < 0 then
      return nil, ("value of '%s' must be an integer >= 0, got %s"):format(k, tostring(x))
    end
    keys[#keys + 1] = k
  end
  table.sort(keys)
  local out, words = {}, {}
  for i, k in ipairs(keys) do
    out[i] = {k, ("%d"):format(v[k])}
    words[#words + 1], words[#words + 2] = out[i][1], out[i][2]
  end
  return verbatim(out, words)
end
function policy_args.format_list(v)
  local w = words_of(v)
  if w then return w end
  local out = {}
  for _, p in ipairs(v) do out[#out + 1] = p[1]; out[#out + 1] = p[2] end
  return out
end

-- Keys each policy takes (the core's migration_threshold for all); nil: a
-- policy not known here, whose keys the kernel judges.
local MQ_KEYS = {"random_threshold", "sequential_threshold", "discard_promote_adjustment",
                 "read_promote_adjustment", "write_promote_adjustment"}
local POLICY_KEYS = {smq = {}, default = {}, cleaner = {}, mq = MQ_KEYS}

-- kstrtoul: digits with an optional '+', at most 2^64 - 1
local function ulong(w)
  local d = w:match("^%+?(%d+)$")
  if not d then return false end
  d = d:gsub("^0+(%d)", "%1")
  return #d < 20 or (#d == 20 and d <= "18446744073709551615")
end

-- the data block: kstrtoul, 32 KiB to 1 GiB, a multiple of 32 KiB. The
-- kernel prints it back as written, so text takes it in plain decimal only
-- ("+64" and "064" would read back so, not as 64).
local block = field.number {parser = "kstrto", sectors = true, min = 64, max = 2097152}
local block_text = block.text
function block.text(w)
  if not w:match("^[1-9]%d*$") then
    return nil, "must be plain decimal (no sign, no leading zero: the kernel prints it back as written)"
  end
  return block_text(w)
end

local decl = {
  type = "cache",
  params = {
    {"metadata", field.device},
    {"cache", field.device},
    {"origin", field.device},
    {"block", block},
    {"features", features},
    {"policy", field.word(), default = "smq"},
    {"policy_args", policy_args},
  },
  extra = {"mode"},
  -- dm.cache {metadata =, cache =, origin =, block = sectors or a size (32KiB to 1GiB, a
  -- multiple of 32KiB), mode = "writeback" | "writethrough" | "passthrough" (the kernel's
  -- default is writeback), features = {"metadata2", "no_discard_passdown"}, policy = "smq",
  -- policy_args = {migration_threshold = 2048}, length =}
  new = function(opts)
    local f = target.fields("cache", opts, {"metadata", "cache", "origin"})
    local mode = f.mode
    f.mode = nil
    if mode ~= nil then
      local known = false
      for _, m in ipairs(MODES) do if mode == m then known = true end end
      if not known then
        check.fail("cache", nil, "field 'mode' must be writeback, writethrough or passthrough, got %s", check.quote(mode))
      end
      local o = f.features
      if type(o) == "string" then o = {o} end
      if o == nil or type(o) == "table" then
        local copy = {}
        for k, v in pairs(o or {}) do copy[k] = v end
        for _, m in ipairs(MODES) do
          local given = copy[m] ~= nil
          for _, x in ipairs(copy) do if type(x) == "string" and x:lower() == m then given = true end end
          if given then check.fail("cache", nil, "field 'mode' is given twice (also in features)") end
        end
        copy[mode] = true
        f.features = copy
      end
    end
    return f
  end,
  length = function(r, ctx) return ctx.facts(r.origin).sectors end,
  areas = function(r) return {{r.origin, 0, r.length, "length"}} end,
  check = function(r, ctx, fail)
    if r.block % 64 ~= 0 then fail("block", "%d must be a multiple of 64 sectors (32 KiB)", r.block) end
    local c = ctx.facts(r.cache)
    if c and r.block > c.sectors then
      fail("block", "%d is larger than the cache device %s (%d sectors)", r.block, ctx.name(r.cache), c.sectors)
    end
    local m, o = ctx.facts(r.metadata), ctx.facts(r.origin)
    local seen = {}
    for _, d in ipairs {{"metadata", m}, {"cache", c}, {"origin", o}} do
      local f = d[2]
      if f and f.major then
        local id = f.major .. ":" .. f.minor
        if seen[id] then fail(d[1], "is the same device as field '%s' (%s)", seen[id], id) end
        seen[id] = d[1]
      end
    end
    local keys = POLICY_KEYS[r.policy]
    local given = {}
    for _, p in ipairs(r.policy_args) do
      local k = p[1]:lower()
      if given[k] then fail("policy_args", "key '%s' is given twice", k) end
      given[k] = true
      local ok = k == "migration_threshold"
      for _, x in ipairs(keys or {}) do if x == k then ok = true end end
      if keys and not ok then
        fail("policy_args", "policy %s takes no key %s (it takes migration_threshold%s)", r.policy, check.quote(p[1]),
             #keys > 0 and ", " .. table.concat(keys, ", ") or "")
      end
      if (keys or k == "migration_threshold") and not ulong(p[2]) then
        fail("policy_args", "value of %s must be a decimal integer (digits, an optional '+'), got %s",
             check.quote(p[1]), check.quote(p[2]))
      end
    end
  end,
  -- <md block> <used>/<total md blocks> <cache block> <used>/<total cache blocks>
  -- <read hits> <read misses> <write hits> <write misses> <demotions> <promotions> <dirty>
  -- <#features> <features>* <#core args> <core args>* <policy> <#policy args> <args>* <ro|rw> <needs_check|->
  status = function(w)
    if w[1] == "Fail" or w[1] == "Error" then return {state = w[1]:lower(), fail = w[1] == "Fail"} end
    local function n(i) return math.tointeger(tonumber(w[i] or "")) end
    local function frac(i)
      local a, b = (w[i] or ""):match("^(%d+)/(%d+)$")
      return math.tointeger(tonumber(a)), math.tointeger(tonumber(b))
    end
    local r = {state = "ok", metadata_block = n(1), cache_block = n(3)}
    r.metadata_used, r.metadata_total = frac(2)
    r.cache_used, r.cache_total = frac(4)
    r.read_hits, r.read_misses, r.write_hits, r.write_misses = n(5), n(6), n(7), n(8)
    r.demotions, r.promotions, r.dirty = n(9), n(10), n(11)
    local i = 12
    local nf = math.min(n(i) or 0, #w)
    r.features = {}
    for j = 1, nf do
      local f = w[i + j]
      r.features[#r.features + 1] = f
      for _, m in ipairs(MODES) do if f == m then r.mode = m end end
      if f == "metadata2" then r.metadata2 = true end
      if f == "no_discard_passdown" then r.no_discard_passdown = true end
    end
    i = i + nf + 1
    local nc = math.min(n(i) or 0, #w)
    r.core = {}
    for j = 1, nc, 2 do
      local k, v = w[i + j], w[i + j + 1]
      if k then r.core[k] = math.tointeger(tonumber(v or "")) or v end
    end
    r.migration_threshold = r.core.migration_threshold
    i = i + nc + 1
    r.policy = w[i]
    local np = math.min(n(i + 1) or 0, #w)
    r.policy_args = {}
    for j = 1, np, 2 do
      local k, v = w[i + 1 + j], w[i + 2 + j]
      if k then r.policy_args[k] = math.tointeger(tonumber(v or "")) or v end
    end
    i = i + 2 + np
    r.metadata_mode = w[i]
    r.read_only = w[i] == "ro"
    r.needs_check = w[i + 1] == "needs_check"
    return r
  end,
  messages = {
    --- dev:migration_threshold(sectors): how much I/O migrations may use at once.
    -- @function Device:migration_threshold
    -- @within Target messages
    migration_threshold = function(dev, n)
      if math.type(n) ~= "integer" or n < 0 then
        check.fail("migration_threshold", dev.name, "must be an integer number of sectors >= 0, got %s", tostring(n))
      end
      return dev:message(("migration_threshold %d"):format(n))
    end,
    --- dev:policy_config(key, value): a "<key> <value>" message (the core's or the policy's).
    -- @function Device:policy_config
    -- @within Target messages
    policy_config = function(dev, key, value)
      if type(key) ~= "string" or key == "" or field.word_rule(key) then
        check.fail("policy_config", dev.name, "key must be one word, got %s", check.quote(key))
      end
      if key:lower() == "invalidate_cblocks" then
        check.fail("policy_config", dev.name, "invalidate_cblocks is a message of its own: dev:invalidate_cblocks(...)")
      end
      if math.type(value) ~= "integer" or value < 0 then
        check.fail("policy_config", dev.name, "value must be an integer >= 0, got %s", tostring(value))
      end
      return dev:message(("%s %d"):format(key, value))
    end,
    --- dev:invalidate_cblocks(3, {10, 20}, ...): drop cache blocks (a block, or {first, end}
    -- with end excluded); the kernel takes it only in passthrough mode.
    -- @function Device:invalidate_cblocks
    -- @within Target messages
    invalidate_cblocks = function(dev, ...)
      local w = {"invalidate_cblocks"}
      for i = 1, select("#", ...) do
        local x = select(i, ...)
        if math.type(x) == "integer" and x >= 0 then
          w[#w + 1] = ("%d"):format(x)
        elseif type(x) == "table" and math.type(x[1]) == "integer" and math.type(x[2]) == "integer"
               and x[1] >= 0 and x[2] > x[1] then
          w[#w + 1] = ("%d-%d"):format(x[1], x[2])
        else
          check.fail("invalidate_cblocks", dev.name, "argument %d must be a block >= 0 or {first, end} with end > first", i)
        end
      end
      if #w == 1 then check.fail("invalidate_cblocks", dev.name, "needs at least one block or range") end
      return dev:message(table.concat(w, " "))
    end,
  },
}

return target.define(decl)
