--- Targets: the segments a table is made of. A target type is one
-- declaration, lua/devmapper/targets/<type>.lua: its parameters as typed
-- fields (devmapper.field) in the kernel's order, the device areas it maps
-- and the rules that tie fields together. Everything else derives from the
-- declaration: parsing table text, formatting it as the kernel prints it,
-- checking values given from Lua, the devices a segment names, where its
-- secrets are, how two segments compare, what to do before create.
local check = require "devmapper.check"
local core = require "devmapper.core"
local field = require "devmapper.field"

local target = {}

local Segment = {__name = "devmapper.Target"}
Segment.__index = Segment
target.Segment = Segment

local registry = {}

local function module_exists(mod)
  return package.loaded[mod] ~= nil or package.preload[mod] ~= nil
         or package.searchpath(mod, package.path) ~= nil
end

--- The declaration of a target type (loaded from devmapper.targets.<type>,
-- with '-' read as '_'), or nil for a type the module does not know.
function target.get(type_name)
  local d = registry[type_name]
  if d == nil then
    d = false
    local mod = type(type_name) == "string" and type_name:match("^[%l%d%-]+$")
                and "devmapper.targets." .. type_name:gsub("%-", "_")
    if mod and module_exists(mod) then
      d = require(mod)
      if d.type ~= type_name then d = false end
    end
    registry[type_name] = d
  end
  return d or nil
end

-- Every target type with a declaration under targets/ (for looking up messages).
target.TYPES = {
  "linear", "striped", "zero", "error", "crypt", "luks", "verity",
  "snapshot", "snapshot-origin", "snapshot-merge",
  "thin-pool", "thin",
  "delay", "flakey", "unstriped", "log-writes", "era",
  "cache", "writecache", "integrity",
  "raid",
}

local message_names
--- Whether some target declares a message (decl.messages) by this name.
function target.has_message(name)
  if not message_names then
    message_names = {}
    for _, t in ipairs(target.TYPES) do
      for n in pairs(target.get(t).messages or {}) do message_names[n] = true end
    end
  end
  return message_names[name] == true
end

-- Field names a builder takes besides the parameters.
local COMMON = {length = true}

--- Declare a target type; returns the declaration with its builder.
-- decl = {type =, params = {{name, kind, default =}, {name, count = list},
--   {name, list = {{sub, kind}, ...}}, {name, field.options{...}}, {name, field.key, keyring = flag},
--   {name, kind, optional = true} (this and every later parameter may be left out)},
--   extra = {other builder fields}, flags = {builder fields that are true or false},
--   new = function(...) -> fields (builder arguments to fields; see target.fields),
--   length = function(r, ctx) -> default length, areas = function(r) -> {{dev, start, len, field}},
--   block = function(r) -> a logical block size (bytes) the target imposes,
--   check = function(r, ctx, fail), status = function(words) -> table,
--   readonly = true (a device with it is made read-only, as the kernel requires),
--   alone = true (the kernel takes it only as the one segment of a table),
--   form = "<how its words read>" (for messages, where the params do not say it well),
--   word_counts = {n, ...} (the only numbers of words the kernel takes: dm-delay's 3, 6 or 9),
--   more_devices = function(seg) -> devices named inside other parameters (an option's value),
--   messages = {name = function(device, ...)}: target messages, as methods of a Device
--     with such a target (checking the arguments, then device:message(text)),
--   same = function(mine, live) -> whether live parameter text (the kernel's) is what mine
--     asked for, where the kernel prints values of its own choosing (integrity's journal size),
--   expand = function(seg, ctx, fail) -> the segment of another type it stands for (or nil: not yet),
--   before_create = {when = f(seg), run = f(seg, ctx), show = f(seg, ctx) -> command line}}
function target.define(decl)
  decl.allowed, decl.flags = {}, decl.flags or {}
  for k in pairs(COMMON) do decl.allowed[k] = true end
  for _, p in ipairs(decl.params) do
    if not p.count then decl.allowed[p[1]] = true end
    if p.keyring then decl.flags[#decl.flags + 1] = p.keyring end
    if p[2] and p[2].secret then decl.secret = true end
  end
  for _, k in ipairs(decl.extra or {}) do decl.allowed[k] = true end
  for _, k in ipairs(decl.flags) do decl.allowed[k] = true end
  -- where the secret is in the kernel's text: its word, if every parameter before it is one word
  for i, p in ipairs(decl.params) do
    if p.list or (p[2] and p[2].options) then break end
    if p[2] and p[2].secret then decl.secret_word = i break end
  end
  decl.builder = function(...)
    local fields = decl.new(...)
    if decl.secret then return check.redacted(target.build, decl, fields) end
    return target.build(decl, fields)
  end
  registry[decl.type] = decl
  return decl
end

--- A builder's arguments as fields: the table `opts` (or nil), whose values
-- at integer keys are the fields `positions` names, plus `given` (fields
-- passed as arguments of their own); a field given twice is refused.
-- @usage new = function(dev, opts) return target.fields("linear", opts, {}, {dev = dev}) end
function target.fields(type_name, opts, positions, given)
  if opts ~= nil and type(opts) ~= "table" then
    check.fail(type_name, nil, "expected a table of fields, got %s", type(opts))
  end
  local f = {}
  for k, v in pairs(opts or {}) do
    if math.type(k) == "integer" then
      local n = positions[k]
      if not n then
        check.fail(type_name, nil, "value [%d] has no field: %s takes %s", k, type_name,
                   #positions == 0 and "no values by position" or table.concat(positions, ", ") .. " by position")
      end
      if opts[n] ~= nil then check.fail(type_name, nil, "field '%s' is given twice (by position and by name)", n) end
      k = n
    end
    f[k] = v
  end
  for k, v in pairs(given or {}) do
    if f[k] ~= nil then check.fail(type_name, nil, "field '%s' is given twice (as an argument and in the table)", k) end
    f[k] = v
  end
  return f
end

local function build_fail(decl)
  return function(name, fmt, ...)
    check.fail(decl.type, nil, "field '%s' " .. fmt, name, ...)
  end
end

local function names_of(list)
  local n = {}
  for i, sub in ipairs(list) do n[i] = sub[1] end
  return n
end

-- The segment's values, checked and normalized, as a view over it.
local function checked(decl, s, fail)
  local r = setmetatable({}, {__index = s})
  for _, p in ipairs(decl.params) do
    local name, kind = p[1], p[2]
    if p.list then
      local list = s[name]
      if type(list) ~= "table" then fail(name, "must be a list, got %s", type(list)) end
      local subs, n = {}, 0
      for _, sub in ipairs(p.list) do subs[sub[1]] = true end
      for _ in pairs(list) do n = n + 1 end
      if n ~= #list then fail(name, "must be a list from 1 without holes") end
      local items = {}
      for i, item in ipairs(list) do
        if type(item) ~= "table" or getmetatable(item) ~= nil then
          fail(("%s[%d]"):format(name, i), "must be a table {%s}, got %s", table.concat(names_of(p.list), ", "), type(item))
        end
        for k in pairs(item) do
          if not subs[k] then fail(("%s[%d]"):format(name, i), "has no field %s (its fields: %s)", check.quote(k),
                                   table.concat(names_of(p.list), ", ")) end
        end
        local it = {}
        for _, sub in ipairs(p.list) do
          local v = item[sub[1]]
          if v == nil then v = sub.default end
          local label = ("%s[%d].%s"):format(name, i, sub[1])
          if v == nil then fail(label, "is required") end
          local nv, why = sub[2].lua(v, label)
          if nv == nil then fail(label, "%s", why) end
          it[sub[1]] = nv
        end
        items[i] = it
      end
      if #items < (p.min or 0) then fail(name, "must name at least %d device%s", p.min, p.min == 1 and "" or "s") end
      r[name] = items
    elseif not p.count then
      local v = s[name]
      if v == nil then v = p.default end
      if v == nil and not kind.options and not p.optional then fail(name, "is required") end
      if v ~= nil or kind.options then
        local nv, why = kind.lua(v, name)
        if nv == nil then fail(name, "%s", why) end
        r[name] = nv
      end
    end
  end
  return r
end

--- Make a segment of a declared type from fields given in Lua; raises
-- naming the field for a value the kernel would not read as given.
function target.build(decl, fields)
  if type(fields) ~= "table" then check.fail(decl.type, nil, "expected a table of fields, got %s", type(fields)) end
  local fail = build_fail(decl)
  for k in pairs(fields) do
    if not decl.allowed[k] then
      local names = {}
      for n in pairs(decl.allowed) do names[#names + 1] = n end
      table.sort(names)
      fail(tostring(k), "is not a field of %s (its fields: %s)", decl.type, table.concat(names, ", "))
    end
  end
  for _, k in ipairs(decl.flags) do
    if fields[k] ~= nil and type(fields[k]) ~= "boolean" then fail(k, "must be true or false, got %s", type(fields[k])) end
  end
  local s = setmetatable({type = decl.type}, Segment)
  for k, v in pairs(fields) do s[k] = v end
  for _, p in ipairs(decl.params) do
    if s[p[1]] == nil and p.default ~= nil then s[p[1]] = p.default end
  end
  -- normalize now ("1MiB" becomes sectors), so that mistakes raise where they are made
  local r = checked(decl, s, fail)
  for _, p in ipairs(decl.params) do
    if not p.count then s[p[1]] = rawget(r, p[1]) end
  end
  if s.length ~= nil then
    local len, why = field.sector.lua(s.length, "length")
    if not len or len == 0 then fail("length", "%s", why or "must be more than 0") end
    s.length = len
  end
  return s
end

--- A segment of an unknown type: its parameter text, verbatim.
function target.verbatim(type_name, params, length)
  return setmetatable({type = type_name, params = params, length = length}, Segment)
end

--- Parse the words of a segment's parameters into a segment.
-- @tparam string type_name
-- @tparam table words from field.split (a Key may stand for a secret word)
-- @tparam function fail(field, fmt, ...) raises, naming the segment
-- @tparam string raw the parameter text (kept verbatim for unknown types)
-- @tparam[opt] boolean masked zeros in a secret word stand for a key not shown
function target.parse(type_name, words, fail, raw, masked)
  local decl = target.get(type_name)
  if not decl then return target.verbatim(type_name, raw) end
  if decl.secret then return check.redacted(target.read, decl, words, fail, masked) end
  return target.read(decl, words, fail, masked)
end

-- The words of a declared type into a segment.
function target.read(decl, words, fail, masked)
  local type_name = decl.type
  local s = setmetatable({type = type_name, from_text = true}, Segment)
  local function word_fail(name, w, why)
    if type(w) ~= "string" then fail(name, "%s", why) end
    fail(name, "%s, got %s", why, check.quote(w))
  end
  local i, n, counts = 1, #words, {}
  if decl.word_counts then
    local ok, forms = false, {}
    for _, c in ipairs(decl.word_counts) do ok = ok or c == n; forms[#forms + 1] = tostring(c) end
    if not ok then
      fail("params", "has %d word%s: %s takes exactly %s (%s)", n, n == 1 and "" or "s", type_name,
           table.concat(forms, ", "):gsub(", (%d+)$", " or %1"), target.form(decl))
    end
  end
  local function read(name, kind)
    local w = words[i]
    if w == nil then
      fail(name, "is missing: %s takes %s", type_name, target.form(decl))
    end
    i = i + 1
    if kind.secret and field.is_key(w) then return w end
    if kind.secret and masked and w:match("^0+$") and #w % 2 == 0 then return field.key.masked(#w // 2) end
    local v, why = kind.text(w)
    if v == nil then word_fail(name, w, why) end
    return v
  end
  for _, p in ipairs(decl.params) do
    local name, kind = p[1], p[2]
    if p.optional and i > n then break end
    if p.count then
      counts[p.count] = read(name, kind)
    elseif p.list then
      local c = counts[name]
      if c > (n - i + 1) // #p.list then
        fail(name, "count %d needs %d words, but %d follow", c, c * #p.list, n - i + 1)
      end
      local items = {}
      for j = 1, c do
        local it = {}
        for _, sub in ipairs(p.list) do it[sub[1]] = read(("%s[%d].%s"):format(name, j, sub[1]), sub[2]) end
        items[j] = it
      end
      s[name] = items
    elseif kind.options then
      s[name] = {}
      if kind.always and not kind.count_optional and i > n then fail(name, "is missing its count: %s takes %s", type_name, target.form(decl)) end
      if i <= n then
        local c, why = field.number {parser = "scanf", bits = 32, max = kind.max}.text(words[i])
        if not c then word_fail(name, words[i], "count " .. why) end
        if c > n - i then fail(name, "count %d is more than the %d words that follow", c, n - i) end
        local m, mwhy = kind.text_list(table.move(words, i + 1, i + c, 1, {}))
        if not m then fail(name, "%s", mwhy) end
        s[name] = m
        i = i + 1 + c
      end
    else
      s[name] = read(name, kind)
    end
  end
  if i <= n then
    fail("params", "has %d word%s more than %s takes (%s): the kernel would ignore %s",
         n - i + 1, n - i == 0 and "" or "s", type_name, target.form(decl), n - i == 0 and "it" or "them")
  end
  return s
end

--- How a type's parameters read, for messages: "<dev> <offset>".
function target.form(decl)
  if decl.form then return decl.form end
  local w = {}
  for _, p in ipairs(decl.params) do
    if p.list then
      local sub = {}
      for _, x in ipairs(p.list) do sub[#sub + 1] = "<" .. x[1] .. ">" end
      w[#w + 1] = "(" .. table.concat(sub, " ") .. ")..."
    elseif p[2].options then
      w[#w + 1] = (p[2].always and "<#%s> [<%s>...]" or "[<#%s> <%s>...]"):format(p[1], p[1])
    elseif p.optional then
      w[#w + 1] = "[<" .. p[1] .. ">]"
    else
      w[#w + 1] = "<" .. (p.count and "#" .. p.count or p[1]) .. ">"
    end
  end
  return #w == 0 and "no parameters" or table.concat(w, " ")
end

-- Descriptions by Key (an HMAC per resolution is costly; a Key's bytes never change).
local descs = setmetatable({}, {__mode = "k"})

--- The keyring description a key goes under: named after the key (an HMAC
-- keyed by it, from which nothing of it can be recovered), so the same key
-- gives the same table text in every run.
function target.key_desc(k)
  local d = descs[k]
  if not d then
    d = "devmapper:" .. core.key_fingerprint(k)
    descs[k] = d
  end
  return d
end

-- What stands for a secret: a keyring reference, "<key>" for the C core
-- to fill in from locked memory, a fingerprint (to compare), or zeros.
local function key_word(r, p, mode, out)
  local v = r[p[1]]
  if v == "-" then return "-" end
  if type(v) == "table" then
    if v.ref then
      if v.ktype == "logon" and v.desc:match("^devmapper:") then
        out.ring = out.ring or {}
        out.ring[v.desc] = true
      end
      return v.ref
    end
    if mode == "kernel" then
      error(("field '%s' holds a key read back without its bytes (read the table with {keys = true})")
            :format(p[1]), 0)
    end
    return mode == "compare" and "masked" or ("0"):rep(2 * v.masked)
  end
  if p.keyring and r[p.keyring] ~= false and not r.from_text then
    local desc = target.key_desc(v)
    out.ring = out.ring or {}
    out.ring[desc] = v
    return (":%d:logon:%s"):format(#v, desc)
  end
  if mode == "kernel" then
    out.key = v
    return "<key>"
  end
  if mode == "compare" then return "key:" .. core.key_fingerprint(v) end
  return ("0"):rep(2 * #v)
end

local function format_params(decl, r, ctx, mode, out)
  local w = {}
  local function add(s) w[#w + 1] = s end
  for _, p in ipairs(decl.params) do
    local name, kind = p[1], p[2]
    if p.count then
      add(tostring(#r[p.count]))
    elseif p.list then
      for _, item in ipairs(r[name]) do
        for _, sub in ipairs(p.list) do add(sub[2].format(item[sub[1]], ctx)) end
      end
    elseif p.optional and r[name] == nil then
      break
    elseif kind.options then
      local o = kind.format_list(r[name], ctx)
      if #o > 0 or kind.always then
        add(tostring(#o))
        for _, x in ipairs(o) do add(x) end
      end
    elseif kind.secret then
      add(key_word(r, p, mode, out))
    else
      add(kind.format(r[name], ctx))
    end
  end
  return table.concat(w, " ")
end

-- The kernel's check of each device area (device_area_is_invalid): inside
-- the device, and aligned to the target's logical block size, which is the
-- largest of its devices' and what the target imposes (dm-crypt's sector_size).
local function check_areas(decl, r, ctx, fail)
  local areas = decl.areas and decl.areas(r) or {}
  local dev_lbs = 512
  for _, a in ipairs(areas) do
    local f = ctx.facts(a[1])
    if f then dev_lbs = math.max(dev_lbs, f.logical_block_size or 512) end
  end
  local lbs = math.max(dev_lbs, decl.block and decl.block(r) or 512)
  for _, a in ipairs(areas) do
    local dev, start, len, name = a[1], a[2], a[3], a[4]
    local f = ctx.facts(dev)
    if f and f.sectors == 0 then
      -- the kernel would map it (an empty device skips its size check): never what is meant
      fail(name, "%s is empty (0 sectors)", ctx.name(dev))
    end
    if f and len then
      if start >= f.sectors then
        fail(name, "%d is past the end of %s (%d sectors)", start, ctx.name(dev), f.sectors)
      elseif len > f.sectors - start then
        fail("length", "must fit in the device: %d sectors at offset %d run past the end of %s (%d sectors)",
             len, start, ctx.name(dev), f.sectors)
      end
    end
    local per = lbs // 512
    if per > 1 then
      if start % per ~= 0 then
        fail(name, "offset %d must be a multiple of %d sectors (the logical block size, %d bytes)", start, per, lbs)
      end
      if len and len % per ~= 0 then
        fail("length", "%d must be a multiple of %d sectors (the logical block size, %d bytes)", len, per, lbs)
      end
    end
  end
  return lbs, dev_lbs
end

--- A segment as the kernel gets it: its values checked, its length,
-- parameter text, logical block size and key.
-- @tparam Segment s
-- @tparam table ctx a resolution context (devmapper.table)
-- @tparam function fail(field, fmt, ...) raises, naming the segment
-- @tparam string mode "kernel", "show" (keys as zeros) or "compare" (keys as fingerprints)
-- @tparam boolean strict check every rule (false: format what can be, for display)
-- @treturn table {length =, params =, key =, lbs =, dev_lbs = (the logical block
--   sizes, in bytes, of the target and of its devices)}
function target.resolve(s, ctx, fail, mode, strict)
  local decl = target.get(s.type)
  if not decl then
    local p = s.params
    if type(p) ~= "string" then fail("params", "must be the parameter text of type %s, got %s", s.type, type(p)) end
    return {length = s.length, params = p, lbs = 512, dev_lbs = 512}
  end
  local r = checked(decl, s, fail)
  local length = s.length
  if length ~= nil then
    local why
    length, why = field.sector.lua(length, "length")
    if not length then fail("length", "%s", why) end
  elseif decl.length then
    local ok, l = pcall(decl.length, r, ctx)
    if ok then length = l elseif strict then error(l, 0) end
  end
  r.length = length
  local out = {lbs = 512, dev_lbs = 512}
  if strict then
    if decl.check then decl.check(r, ctx, fail) end
    if length == nil then fail("length", "is required (this target has no default length)") end
    if length <= 0 then fail("length", "must be more than 0 (it is %d)", length) end
    out.lbs, out.dev_lbs = check_areas(decl, r, ctx, fail)
  end
  out.length = length
  out.params = format_params(decl, r, ctx, mode, out)
  return out
end

--- The devices a segment names (Loops, Devices, paths, major:minor, member names).
function Segment:devices()
  local decl = target.get(self.type)
  local out = {}
  for _, p in ipairs(decl and decl.params or {}) do
    local function add(d) if d ~= nil and d ~= "-" then out[#out + 1] = d end end
    if p[2] and p[2].device then
      add(self[p[1]])
    elseif p.list then
      for _, sub in ipairs(p.list) do
        if sub[2].device then
          for _, item in ipairs(self[p[1]] or {}) do add(item[sub[1]]) end
        end
      end
    end
  end
  for _, d in ipairs(decl and decl.more_devices and decl.more_devices(self) or {}) do out[#out + 1] = d end
  return out
end

--- Run what the type needs before a device is created with this segment
-- (a snapshot's COW zeroed, unless it is to be reused).
-- @tparam table ctx resolution context (device paths)
-- @tparam[opt] boolean show return the command line it stands for instead
function Segment:before_create(ctx, show)
  local decl = target.get(self.type)
  local b = decl and decl.before_create
  if not (b and b.when(self)) then return nil end
  if show then return b.show(self, ctx) end
  b.run(self, ctx)
end

--- The segment the kernel gets: itself, or what a type that stands for
-- another (luks: a crypt segment made from its header) becomes with ctx
-- (nil while it cannot be known: a plan over members still to be made).
function Segment:expanded(ctx, fail)
  local decl = target.get(self.type)
  if decl and decl.expand then return decl.expand(self, ctx, fail) end
  return self
end

--- Whether the segment carries a secret (its task is then marked secure).
function Segment:secret()
  local decl = target.get(self.type)
  return decl and decl.secret or false
end

--- A message that is no message of the kernel's: reload the device with
-- its segments of this type rebuilt from their live fields and `changes`
-- (for targets whose only reconfiguration is a new table: flakey, delay).
-- A change named `k` replaces every live field `k_...` too (delay's
-- `write = {...}` replaces write_dev, write_offset and write_delay).
-- Other segments are loaded again as they are; the reload is the module's
-- own (load, then suspend and resume; never left suspended).
function target.reconfigure(type_name)
  return function(dev, changes, opts)
    if type(changes) ~= "table" then
      check.fail("reconfigure", dev.name, "expected a table of changed fields, got %s", type(changes))
    end
    local decl = target.get(type_name)
    local live = dev:table {keys = true}
    local segs, n = {}, 0
    for i, s in ipairs(live) do
      if s.type == type_name then
        n = n + 1
        local f = {length = s.length}
        for _, p in ipairs(decl.params) do if not p.count then f[p[1]] = s[p[1]] end end
        for k in pairs(changes) do
          for name in pairs(f) do
            if type(k) == "string" and name:sub(1, #k + 1) == k .. "_" then f[name] = nil end
          end
        end
        for k, v in pairs(changes) do f[k] = v end
        segs[i] = decl.builder(f)
      else
        segs[i] = s
      end
    end
    if n == 0 then check.fail("reconfigure", dev.name, "has no %s segment", type_name) end
    local t = require("devmapper.table")(segs)
    dev:reload(t, opts)
    return t
  end
end

--- Parse a target's status line into a table (nil for types without a parser).
function target.status(type_name, params)
  local decl = target.get(type_name)
  if decl and decl.status then return decl.status(field.split(params or "")) end
end

function Segment:__tostring()
  return tostring(require("devmapper.table") {self})
end
Segment.__json = Segment.__tostring

-- Table reads ask which word of a type's text is secret, to mask it in C.
require("devmapper.kernel").secret_word = function(type_name)
  local d = target.get(type_name)
  return d and d.secret_word
end

return target
