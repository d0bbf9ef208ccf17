--- Sizes: a Lua integer counts 512-byte sectors; a string has a unit:
-- "2MiB", "1.5GiB", "512KiB", "4096s" (sectors), "1000B", "10MB" (SI).
-- Arithmetic is exact: a size that is not a whole number of what is asked
-- for, or that does not fit in a Lua integer, is refused, never rounded.
local check = require "devmapper.check"

local size = {}

local KiB = 1024
local units = {
  s = 512, B = 1,
  K = KiB, KiB = KiB, M = KiB ^ 2, MiB = KiB ^ 2, G = KiB ^ 3, GiB = KiB ^ 3,
  T = KiB ^ 4, TiB = KiB ^ 4, P = KiB ^ 5, PiB = KiB ^ 5,
  kB = 1000, KB = 1000, MB = 1000 ^ 2, GB = 1000 ^ 3, TB = 1000 ^ 4, PB = 1000 ^ 5,
}
for k, v in pairs(units) do units[k] = math.tointeger(v) end

local MAX = math.maxinteger

-- a * b + c for non-negative integers, or nil when it does not fit.
local function mul_add(a, b, c)
  if b ~= 0 and a > (MAX - c) // b then return nil end
  return a * b + c
end
size.mul_add = mul_add

-- Digits as a non-negative integer, or nil when it does not fit.
local function digits(s)
  local n = 0
  for i = 1, #s do
    n = mul_add(n, 10, s:byte(i) - 48)
    if not n then return nil end
  end
  return n
end
size.digits = digits

local function fail(field, fmt, ...)
  check.fail("size", nil, "field '%s' " .. fmt, field, ...)
end

local FORMS = "sectors (an integer) or a size string such as '2MiB', '1.5GiB', '4096s'"

--- Bytes of a size.
-- @param v integer sectors, or a size string
-- @tparam string field its name, for messages
-- @tparam[opt] boolean zero whether 0 is allowed
-- @treturn integer bytes
function size.bytes(v, field, zero)
  field = field or "size"
  local bytes
  if math.type(v) == "integer" then
    if v < 0 then fail(field, "must not be negative (it is %d)", v) end
    bytes = mul_add(v, 512, 0)
    if not bytes then fail(field, "%d sectors is too large (the limit is %d sectors)", v, MAX // 512) end
  elseif type(v) == "string" then
    local int, frac, unit = v:match("^(%d+)%.?(%d*)(%a+)$")
    local mult = units[unit]
    if not int or not mult or (frac == "" and v:find(".", 1, true)) then
      fail(field, "must be %s, got %s", FORMS, check.quote(v))
    end
    frac = frac:gsub("0+$", "")   -- "1.50MiB" is "1.5MiB", however many zeros
    local scale = 10 ^ #frac
    local whole, part = digits(int), digits(frac)
    local num = whole and part and math.type(scale) == "float" and scale <= 1e18
                and mul_add(whole, math.tointeger(scale), part)
    local b = num and mul_add(num, mult, 0)
    if not b then fail(field, "%s is too large", check.quote(v)) end
    scale = math.tointeger(scale)
    if b % scale ~= 0 then fail(field, "%s is not a whole number of bytes", check.quote(v)) end
    bytes = b // scale
  else
    fail(field, "must be %s, got %s", FORMS, math.type(v) == "float" and ("the float " .. tostring(v)) or type(v))
  end
  if bytes == 0 and not zero then fail(field, "must be more than 0") end
  return bytes
end

--- Sectors of a size; a size that is not whole sectors is refused.
-- @param v integer sectors, or a size string
-- @tparam string field its name, for messages
-- @tparam[opt] boolean zero whether 0 is allowed
-- @treturn integer sectors
function size.sectors(v, field, zero)
  if math.type(v) == "integer" then size.bytes(v, field, zero) return v end
  local b = size.bytes(v, field, zero)
  if b % 512 ~= 0 then
    fail(field or "size", "must be a whole number of 512-byte sectors (%s is %d bytes)", check.quote(v), b)
  end
  return b // 512
end

return size
