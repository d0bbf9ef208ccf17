--- Validation helpers: every refusal is the module's error object, naming
-- the field and the rule, raised before the kernel sees anything.
local core = require "devmapper.core"

local check = {}

local EINVAL = 22

--- Raise an error object {op, name, errno = EINVAL, message}.
-- @tparam string op the operation ("create", "table", ...)
-- @tparam ?string name the device or object concerned
-- @tparam string fmt message format, then its arguments
function check.fail(op, name, fmt, ...)
  core.error {op = op, name = name, errno = EINVAL, message = fmt:format(...)}
end

--- An options table (nil for none) whose keys are all in `known` (a set).
-- @treturn table opts, or {} for nil
function check.fields(op, opts, known)
  if opts == nil then return {} end
  if type(opts) ~= "table" then check.fail(op, nil, "options must be a table, got %s", type(opts)) end
  for k in pairs(opts) do
    if not known[k] then
      local names = {}
      for n, yes in pairs(known) do if yes then names[#names + 1] = n end end
      table.sort(names)
      check.fail(op, nil, "field '%s' is not an option (known: %s)", tostring(k), table.concat(names, ", "))
    end
  end
  return opts
end

--- The path of a block device given as a path, a Loop or a Device.
function check.device_path(op, field, dev)
  if type(dev) == "table" and type(dev.path) == "string" then return dev.path end
  if type(dev) == "string" and dev ~= "" then return dev end
  check.fail(op, nil, "field '%s' must be a path, a Loop or a Device, got %s", field, type(dev))
end

-- While a target that holds secrets is read, no word of it is quoted.
local redacting = 0

--- Run fn(...) with check.quote showing no words (for what may hold a key).
function check.redacted(fn, ...)
  redacting = redacting + 1
  local r = table.pack(pcall(fn, ...))
  redacting = redacting - 1
  if not r[1] then error(r[2], 0) end
  return table.unpack(r, 2, r.n)
end

--- A value quoted for a message: one line, control bytes and bytes
-- beyond ASCII escaped, at most about 60 characters.
function check.quote(v)
  if redacting > 0 then return "(a word not shown: it may be a key)" end
  local s = tostring(v)
  local cut = #s > 60
  if cut then s = s:sub(1, 57) end
  s = s:gsub("[%c\\'\128-\255]", function(c) return ("\\%03d"):format(c:byte()) end)
  return "'" .. s .. (cut and "...'" or "'")
end

--- A device name as the kernel accepts it: 1-127 bytes, no '/', not "control".
function check.name(op, name)
  if type(name) ~= "string" then
    check.fail(op, nil, "field 'name' must be a string, got %s", type(name))
  end
  if #name < 1 or #name > 127 then
    check.fail(op, name, "field 'name' must be 1 to 127 bytes long (it is %d)", #name)
  end
  if name:find("/", 1, true) then check.fail(op, name, "field 'name' must not contain '/'") end
  if name == "control" or name == "." or name == ".." then
    check.fail(op, name, "field 'name' must not be %s (reserved)", check.quote(name))
  end
  return name
end

--- A uuid: at most 128 bytes.
function check.uuid(op, name, uuid)
  if uuid == nil then return nil end
  if type(uuid) ~= "string" or #uuid < 1 or #uuid > 128 then
    check.fail(op, name, "field 'uuid' must be a string of 1 to 128 bytes")
  end
  return uuid
end

--- A whole number >= min; nil allowed when optional.
function check.integer(op, name, field, v, min, optional)
  if v == nil and optional then return nil end
  if math.type(v) ~= "integer" and not (type(v) == "number" and v == math.floor(v)) then
    check.fail(op, name, "field '%s' must be an integer, got %s", field, tostring(v))
  end
  v = math.tointeger(v)
  if min and v < min then check.fail(op, name, "field '%s' must be >= %d (it is %d)", field, min, v) end
  return v
end

return check
