--- Sizes: "2MiB", "512KiB", "1G", "4096s" (sectors), or a number of sectors.
local check = require "devmapper.check"

local size = {}

local units = {
  [""] = nil, s = 512, B = 1,
  K = 1024, KiB = 1024, M = 1024^2, MiB = 1024^2, G = 1024^3, GiB = 1024^3, T = 1024^4, TiB = 1024^4,
  kB = 1000, KB = 1000, MB = 1000^2, GB = 1000^3, TB = 1000^4,
}

--- Bytes of a size; a plain number counts 512-byte sectors.
-- @tparam number|string v
-- @tparam string field name for error messages
-- @treturn integer bytes
function size.bytes(v, field)
  field = field or "size"
  if math.type(v) == "integer" then
    if v <= 0 then check.fail("size", nil, "field '%s' must be > 0 sectors", field) end
    return v * 512
  end
  local num, unit = tostring(v):match("^%s*(%d+)%s*(%a*)%s*$")
  local mult = units[unit or ""]
  if not num or not mult then
    check.fail("size", nil, "field '%s' must be sectors or a size like \"2MiB\", \"512KiB\", \"4096s\" (got %q)",
               field, tostring(v))
  end
  local bytes = math.tointeger(tonumber(num) * mult)
  if not bytes or bytes <= 0 then check.fail("size", nil, "field '%s' must be > 0", field) end
  return bytes
end

--- Sectors of a size; refuses sizes that are not whole sectors.
function size.sectors(v, field)
  local b = size.bytes(v, field)
  if b % 512 ~= 0 then
    check.fail("size", nil, "field '%s' must be a multiple of 512 bytes (got %d)", field or "size", b)
  end
  return b // 512
end

return size
