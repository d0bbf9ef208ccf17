--- Typed fields: the kinds of value a target's parameters hold. Each kind
-- reads a word of table text exactly as the kernel's constructor parses it,
-- takes a Lua value, and formats the value as the kernel prints it back.
-- A kind's functions answer (value) or (nil, rule broken); the target layer
-- turns the rule into an error naming the segment and the field.
local check = require "devmapper.check"
local core = require "devmapper.core"
local size = require "devmapper.size"

local field = {}

local MAXINT = math.maxinteger
local U32 = 0xffffffff

--- The kernel's own word splitting (dm_split_args): runs of white space
-- separate words, a backslash makes the next byte part of the word.
-- White space is the kernel's isspace: \t \n \v \f \r, space and 0xA0.
-- @tparam string s
-- @treturn {string,...}
function field.split(s)
  local words, i, n = {}, 1, #s
  while true do
    while i <= n and s:find("^[\t\n\v\f\r \xa0]", i) do i = i + 1 end
    if i > n then return words end
    local w = {}
    while i <= n do
      local c = s:sub(i, i)
      if c == "\\" and i < n then
        w[#w + 1] = s:sub(i + 1, i + 1)
        i = i + 2
      elseif c:find("^[\t\n\v\f\r \xa0]") then
        break
      else
        local j = s:find("[\t\n\v\f\r \xa0\\]", i) or n + 1
        if j == i then j = i + 1 end -- a lone backslash at the very end
        w[#w + 1] = s:sub(i, j - 1)
        i = j
      end
    end
    words[#words + 1] = table.concat(w)
    i = i + 1
  end
end

--- A word as the kernel will split it back: white space and backslashes escaped.
function field.escape(w)
  return (w:gsub("[\t\n\v\f\r \xa0\\]", "\\%0"))
end

-- Decimal digits as a Lua integer within max, or nil and the rule.
local function decimal(digits, max, what)
  local v = size.digits(digits)
  if not v or v > max then return nil, ("must be at most %d%s"):format(max, what or "") end
  return v
end

--- An unsigned decimal integer.
-- @tparam table o {parser = "scanf" | "kstrto", bits = 64 | 32 | 16, min = 0, max =,
--   power_of_2 = true, sectors = true (Lua values may be size strings)}
-- "scanf" is the kernel's sscanf("%llu%c") / ("%u%c"): digits only, no sign;
-- it wraps what overflows, so a value beyond the field is refused here.
-- "kstrto" is kstrtoull / kstrtouint / kstrtoul: an optional '+', digits;
-- the kernel refuses what overflows, as here.
function field.number(o)
  local max = math.min(o.max or MAXINT, o.bits == 32 and U32 or o.bits == 16 and 0xffff or MAXINT)
  local min = o.min or 0
  local pattern = o.parser == "kstrto" and "^%+?(%d+)$" or "^(%d+)$"
  local form = o.parser == "kstrto" and "a decimal integer (digits, an optional '+')"
               or "a decimal integer (digits only)"
  local function range(v)
    if v < min then return nil, ("must be at least %d (it is %d)"):format(min, v) end
    if v > max then return nil, ("must be at most %d (it is %d)"):format(max, v) end
    if o.power_of_2 and v & (v - 1) ~= 0 then return nil, ("must be a power of 2 (it is %d)"):format(v) end
    return v
  end
  local kind = {}
  function kind.text(w)
    local digits = w:match(pattern)
    if not digits then return nil, "must be " .. form end
    local v, why = decimal(digits, max, max == MAXINT and " (a larger value can not be "
                            .. "represented; the kernel would wrap what overflows 64 bits)" or nil)
    if not v then return nil, why end
    return range(v)
  end
  function kind.lua(v, name)
    if o.sectors and type(v) == "string" then
      local ok, r = pcall(size.sectors, v, name, min == 0)
      if not ok then return nil, (tostring(r.message or r):gsub("^field '[^']*' ", "")) end
      v = r
    end
    if math.type(v) ~= "integer" then
      return nil, ("must be an integer%s, got %s"):format(o.sectors and " (sectors) or a size string" or "",
                  math.type(v) == "float" and ("the float " .. tostring(v)) or type(v))
    end
    return range(v)
  end
  function kind.format(v) return ("%d"):format(v) end
  return kind
end

--- Sectors, as sscanf("%llu%c") reads them into a sector_t (offsets, lengths).
field.sector = field.number {parser = "scanf", sectors = true}

--- A device: "major:minor" or a path in text; a Loop, a Device, a path,
-- "major:minor" or (in a stack) a member's name from Lua. Always formatted
-- as major:minor, which is what the kernel prints.
field.device = {}

function field.device.text(w)
  local ma, mi = w:match("^(%d+):(%d+)$")
  if ma then
    -- the kernel's MKDEV: 12 bits of major, 20 of minor
    local a, b = size.digits(ma), size.digits(mi)
    if not a or a > 4095 then return nil, "major must be at most 4095" end
    if not b or b > 0xfffff then return nil, "minor must be at most 1048575" end
    return a .. ":" .. b
  end
  if w:find("[\0-\31]") then return nil, "must be major:minor or a path (it holds control characters)" end
  return w
end

function field.device.lua(v)
  if type(v) == "string" then
    if v == "" then return nil, "must be a device, got an empty string" end
    if v:match("^%d+:%d+$") then return field.device.text(v) end
    return v
  end
  if type(v) == "table" and type(v.path) == "string" then return v end
  return nil, ("must be a Loop, a Device, a path or \"major:minor\", got %s"):format(type(v))
end

function field.device.format(v, ctx) return ctx.dev(v) end

--- A word of the kernel's choosing (a cipher, a policy name): any word
-- without white space; the kernel gives the verdict.
-- @tparam[opt] function rule(w) -> nil or the rule broken
function field.word(rule)
  local kind = {}
  function kind.text(w)
    local why = rule and rule(w)
    if why then return nil, why end
    return w
  end
  function kind.lua(v)
    if type(v) ~= "string" or v == "" then return nil, ("must be a non-empty string, got %s"):format(type(v)) end
    if v:find("[%s\0\xa0]") then return nil, "must be one word (no white space)" end
    return kind.text(v)
  end
  function kind.format(v) return v end
  return kind
end

--- Optional or feature arguments: the kernel's counted list "<#n> <arg>...",
-- left out of the text when empty. Each argument is a flag ("allow_discards")
-- or "name:value". From Lua: an array of words, a map {flag = true,
-- name = value}, a mix of both, or one word. Held as a map; formatted in
-- the kernel's own order, leaving out what the kernel leaves out.
-- @tparam table spec {order = {names, in the kernel's printing order}, fold = true
--   (the kernel takes names in any case),
--   values = {name = kind of its value}, omit = {name = value the kernel does not print},
--   max = the kernel's largest count, requires = {name = other name it needs}}
function field.options(spec)
  local known = {}
  for _, n in ipairs(spec.order) do known[n] = true end
  -- the kernel compares option names without case (strcasecmp)
  local function canon(n) return spec.fold and n:lower() or n end
  local names = table.concat(spec.order, ", ")
  local kind = {options = true, max = spec.max}
  -- one argument word into map m, or the rule broken
  local function add(m, w)
    local name, value = w:match("^([^:]+):(.*)$")
    name = canon(name or w)
    if not known[name] then return ("unknown option %s (known: %s)"):format(check.quote(name), names) end
    if m[name] ~= nil then return ("option '%s' is given twice"):format(name) end
    local vk = spec.values and spec.values[name]
    if vk and not value then return ("option '%s' needs a value (%s:<value>)"):format(name, name) end
    if not vk and value then return ("option '%s' takes no value"):format(name) end
    if vk then
      local v, why = vk.text(value)
      if v == nil then return ("option '%s' %s"):format(name, why) end
      m[name] = v
    else
      m[name] = true
    end
  end
  local function requires(m)
    for n, other in pairs(spec.requires or {}) do
      if m[n] and not m[other] then return ("option '%s' needs option '%s'"):format(n, other) end
    end
  end
  function kind.text_list(words)
    local m = {}
    for _, w in ipairs(words) do
      local why = add(m, w)
      if why then return nil, why end
    end
    local why = requires(m)
    if why then return nil, why end
    return m
  end
  function kind.lua(v)
    if v == nil then return {} end
    if type(v) == "string" then v = {v} end
    if type(v) ~= "table" then return nil, ("must be a list of options or a map, got %s"):format(type(v)) end
    local m = {}
    for k, x in pairs(v) do
      local why
      if math.type(k) == "integer" then
        if type(x) ~= "string" then return nil, ("entry %d must be an option name, got %s"):format(k, type(x)) end
        why = add(m, x)
      elseif type(k) ~= "string" or not known[canon(k)] then
        return nil, ("unknown option %s (known: %s)"):format(check.quote(k), names)
      elseif x == false then
        if m[canon(k)] ~= nil then why = ("option '%s' is given twice"):format(k) end
      elseif x == true then
        why = add(m, k)
      elseif spec.values and spec.values[canon(k)] then
        k = canon(k)
        if m[k] ~= nil then return nil, ("option '%s' is given twice"):format(k) end
        local val, vwhy = spec.values[k].lua(x)
        if val == nil then why = ("option '%s' %s"):format(k, vwhy) end
        m[k] = val
      else
        why = ("option '%s' is a flag: give true or false, got %s"):format(k, type(x))
      end
      if why then return nil, why end
    end
    local why = requires(m)
    if why then return nil, why end
    return m
  end
  function kind.format_list(m)
    local out = {}
    for _, n in ipairs(spec.order) do
      local v = m[n]
      if v == true then
        out[#out + 1] = n
      elseif v ~= nil and not (spec.omit and spec.omit[n] == v) then
        out[#out + 1] = n .. ":" .. spec.values[n].format(v)
      end
    end
    return out
  end
  return kind
end

--- Whether v is a Key (open or closed).
function field.is_key(v)
  local mt = type(v) == "userdata" and getmetatable(v)
  return type(mt) == "table" and mt.__name == "devmapper.Key"
end

--- A secret key (dm-crypt's <key>): a Key object; in text, hex digits
-- (decoded at once into a Key, so no table holds key bytes in a string),
-- a kernel keyring reference ":<size>:<type>:<description>", or "-" (no key).
-- Keys never appear in messages.
field.key = {secret = true}

function field.key.text(w)
  if w == "-" then return "-" end
  if w:sub(1, 1) == ":" then
    local n, ktype, desc = w:match("^:(%d+):([^:]*):(.*)$")
    if not n then return nil, "a keyring reference must be :<size>:<type>:<description>" end
    local bytes = decimal(n, U32)
    if not bytes then return nil, "the size in a keyring reference must be at most 4294967295" end
    if ktype ~= "logon" and ktype ~= "user" and ktype ~= "encrypted" and ktype ~= "trusted" then
      return nil, "the key type in a keyring reference must be logon, user, encrypted or trusted"
    end
    if desc == "" then return nil, "the description in a keyring reference must not be empty" end
    return {ref = (":%d:%s:%s"):format(bytes, ktype, desc), size = bytes, ktype = ktype, desc = desc}
  end
  if #w % 2 == 1 then return nil, ("hex must have an even number of digits (it has %d)"):format(#w) end
  local bad = w:find("[^%x]")
  if bad then return nil, ("must be hex digits, a keyring reference or '-' (character %d is neither)"):format(bad) end
  local ok, k = pcall(core.key_from_hex, w)
  if not ok then return nil, "is not a usable hex key (" .. tostring(k.message or k) .. ")" end
  return k
end

function field.key.lua(v)
  if field.is_key(v) then
    if not pcall(function() return #v end) then return nil, "is closed (its bytes were wiped)" end
    return v
  end
  if v == "-" then return v end
  if type(v) == "table" and (v.ref or v.masked) then return v end
  return nil, ("must be a dm.key object (dm.key.random, dm.key.derive, dm.key.from_hex), got %s"):format(type(v))
end

--- Key size in bytes of a key value.
function field.key.bytes(v)
  if v == "-" then return 0 end
  if type(v) == "table" then return v.size or v.masked end
  return #v
end

return field
