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

--- Words as the kernel gets them: runs of white space separate words
-- (the kernel's isspace: \t \n \v \f \r, space and 0xA0). A backslash is
-- an ordinary byte: libdevmapper doubles each one it sends (dmsetup's text
-- and the module's alike), so the kernel's splitter never joins two words.
-- @tparam string s
-- @treturn {string,...}
function field.split(s)
  local words = {}
  for w in s:gmatch("[^\t\n\v\f\r \xa0]+") do words[#words + 1] = w end
  return words
end

--- What a word given from Lua must not hold, or nil: white space (it would
-- reach the kernel as two words), control bytes (C ends the text at a NUL)
-- or '#' (dmsetup reads the rest of a line as a comment).
function field.word_rule(w)
  if w:find("[%s%c\xa0]") then return "must be one word (no white space or control characters)" end
  if w:find("#", 1, true) then return "must not hold '#' (table text reads the rest of a line as a comment)" end
  if w:find("<key>", 1, true) then return "must not hold '<key>' (the C core puts a key's hex there)" end
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
field.device = {device = true}

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
    local why = field.word_rule(v)
    if why then return nil, why end
    return v
  end
  if type(v) == "table" and type(v.path) == "string" then return v end
  return nil, ("must be a Loop, a Device, a path or \"major:minor\", got %s"):format(type(v))
end

function field.device.format(v, ctx) return ctx.dev(v) end

--- A device or "-" for none (dm-raid's metadata devices): nil from Lua is "-".
field.device_or_none = {device = true}
function field.device_or_none.text(w) if w == "-" then return w end return field.device.text(w) end
function field.device_or_none.lua(v) if v == nil or v == "-" then return "-" end return field.device.lua(v) end
function field.device_or_none.format(v, ctx) if v == "-" then return v end return ctx.dev(v) end

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
    local why = field.word_rule(v)
    if why then return nil, why end
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
--   (the kernel takes flag names in any case; names with a value it matches
--   with sscanf, so exactly), values = {name = kind of its value},
--   omit = {name = value the kernel does not print},
--   spaced = {name = n: its value is the n words after the name, not name:value;
--     for n > 1 the value kind reads and formats a list of n words},
--   always = true (the count is printed, and required, even when it is 0),
--   max = the kernel's largest count, requires = {name = other name it needs}}
function field.options(spec)
  local values = spec.values or {}
  local known = {}
  for _, n in ipairs(spec.order) do known[n] = true end
  local function canon(n)
    local l = spec.fold and n:lower()
    if l and known[l] and (spec.fold == "all" or not values[l]) then return l end
    return n
  end
  local names = table.concat(spec.order, ", ")
  local spaced = spec.spaced or {}
  local kind = {options = true, max = spec.max, always = spec.always}
  local function unknown(n) return ("unknown option %s (known: %s)"):format(check.quote(n), names) end
  -- one argument word into map m (given: the names seen), or the rule broken
  local function add(m, given, w, value_words)
    local name, value = w, value_words
    if not spaced[canon(w)] then name, value = w:match("^([^:]+):(.*)$") end
    name = canon(name or w)
    if not known[name] then return unknown(name) end
    if spaced[name] and not value_words then
      return ("option '%s' takes its value as the next word%s, not %s:<value>"):format(name, spaced[name] > 1 and "s" or "", name)
    end
    if given[name] then return ("option '%s' is given twice"):format(name) end
    given[name] = true
    local vk = values[name]
    if vk and not value then
      return ("option '%s' needs a value (%s)"):format(name, spaced[name] and name .. " <value>" or name .. ":<value>")
    end
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
    local m, given, i = {}, {}, 1
    while i <= #words do
      local w = words[i]
      local n = spaced[canon(w)]
      local value
      if n then
        if #words - i < n then return nil, ("option '%s' needs %d word%s after it"):format(w, n, n == 1 and "" or "s") end
        value = n == 1 and words[i + 1] or table.move(words, i + 1, i + n, 1, {})
      end
      local why = add(m, given, w, value)
      if why then return nil, why end
      i = i + 1 + (n or 0)
    end
    local why = requires(m)
    if why then return nil, why end
    return m
  end
  -- one map entry k = x into m, or the rule broken
  local function add_entry(m, given, k, x)
    local name = type(k) == "string" and canon(k)
    if not name or not known[name] then return unknown(tostring(k)) end
    if x == true then return add(m, given, k) end
    if given[name] then return ("option '%s' is given twice"):format(name) end
    given[name] = true
    if x == false then return nil end
    if not values[name] then return ("option '%s' is a flag: give true or false, got %s"):format(k, type(x)) end
    local val, why = values[name].lua(x)
    if val == nil then return ("option '%s' %s"):format(name, why) end
    m[name] = val
  end
  function kind.lua(v)
    if v == nil then return {} end
    if type(v) == "string" then v = {v} end
    if type(v) ~= "table" then return nil, ("must be a list of options or a map, got %s"):format(type(v)) end
    local m, given, keys, listed = {}, {}, {}, 0
    for k in pairs(v) do
      if math.type(k) == "integer" then listed = listed + 1 else keys[#keys + 1] = k end
    end
    for i, x in ipairs(v) do
      if type(x) ~= "string" then return nil, ("entry %d must be an option name, got %s"):format(i, type(x)) end
      local why = add(m, given, x)
      if why then return nil, why end
      listed = listed - 1
    end
    if listed ~= 0 then return nil, "must list its options from 1 without holes" end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    for _, k in ipairs(keys) do
      local why = add_entry(m, given, k, v[k])
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
        local f = values[n].format(v)
        if spaced[n] then
          out[#out + 1] = n
          for _, x in ipairs(type(f) == "table" and f or {f}) do out[#out + 1] = x end
        else
          out[#out + 1] = n .. ":" .. f
        end
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

-- What stands for a key that is not a Key: a keyring reference read from
-- text, or a key read back masked. Only the module makes them.
local KeyWord = {__name = "devmapper.KeyWord"}

--- A key read back as zeros: its size only.
function field.key.masked(bytes) return setmetatable({masked = bytes}, KeyWord) end

function field.key.text(w)
  if w == "-" then return "-" end
  if w:sub(1, 1) == ":" then
    local n, ktype, desc = w:match("^:(%d+):([^:]*):(.*)$")
    if not n then return nil, "a keyring reference must be :<size>:<type>:<description>" end
    -- get_key_size reads it with sscanf("%u") into an int: above 2^31 - 1 it is negative
    local bytes = decimal(n, 0x7fffffff)
    if not bytes then return nil, "the size in a keyring reference must be at most 2147483647" end
    if ktype ~= "logon" and ktype ~= "user" and ktype ~= "encrypted" and ktype ~= "trusted" then
      return nil, "the key type in a keyring reference must be logon, user, encrypted or trusted"
    end
    if desc == "" then return nil, "the description in a keyring reference must not be empty" end
    return setmetatable({ref = (":%d:%s:%s"):format(bytes, ktype, desc), size = bytes, ktype = ktype, desc = desc},
                        KeyWord)
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
  if getmetatable(v) == KeyWord or v == "-" then return v end
  if type(v) == "string" and v:sub(1, 1) == ":" then
    local why = field.word_rule(v)
    if why then return nil, why end
    return field.key.text(v)
  end
  return nil, ("must be a dm.key object (dm.key.random, dm.key.derive, dm.key.from_hex), a keyring "
               .. "reference \":<size>:<type>:<description>\" or \"-\", got %s"):format(type(v))
end

--- Key size in bytes of a key value.
function field.key.bytes(v)
  if v == "-" then return 0 end
  if type(v) == "table" then return v.size or v.masked end
  return #v
end

return field
