--- JSON for the module's tables (info, status, plans, blockdev facts, key
-- parameters, errors), for programs that read what a script did.
-- Objects' keys are sorted, so the same value gives the same text. A Key
-- is never exported: it is written as "<key>". Byte strings that are not
-- text (a salt) are written in hex. A value with a `__json` metamethod (a
-- Plan, a Table, a segment) is written as what it returns; a Device or a
-- Loop as its fields.
-- @usage print(dm.json(dev:info()))
-- @module devmapper.json
local check = require "devmapper.check"
local field = require "devmapper.field"

local json = {}

-- Fields that hold bytes, not text: always hex.
local BYTES = {salt = true}

local ESC = {['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n", ["\r"] = "\\r",
             ["\t"] = "\\t"}

local function hex(s) return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end)) end

local function str(s)
  return '"' .. s:gsub('[%c"\\]', function(c) return ESC[c] or ("\\u%04x"):format(c:byte()) end) .. '"'
end

local function encode(v, path, seen, out)
  local t = type(v)
  if t == "table" or t == "userdata" then
    local mt = getmetatable(v)
    if field.is_key(v) then out[#out + 1] = '"<key>"' return end
    if type(mt) == "table" and mt.__json then return encode(mt.__json(v), path, seen, out) end
    if t == "userdata" then check.fail("json", nil, "%s is a %s, which has no JSON form", path, tostring(mt and mt.__name or t)) end
  end
  if v == nil then
    out[#out + 1] = "null"
  elseif t == "boolean" then
    out[#out + 1] = tostring(v)
  elseif math.type(v) == "integer" then
    out[#out + 1] = ("%d"):format(v)
  elseif t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then check.fail("json", nil, "%s is %s, which JSON has not", path, tostring(v)) end
    out[#out + 1] = ("%.17g"):format(v)
  elseif t == "string" then
    out[#out + 1] = utf8.len(v) and str(v) or str(hex(v))
  elseif t == "table" then
    if seen[v] then check.fail("json", nil, "%s holds itself (a cycle)", path) end
    seen[v] = true
    local n, keys = #v, {}
    for k in pairs(v) do
      if not (math.type(k) == "integer" and k >= 1 and k <= n) then
        if type(k) ~= "string" then check.fail("json", nil, "%s has a %s key, which JSON has not", path, type(k)) end
        keys[#keys + 1] = k
      end
    end
    if n > 0 and #keys == 0 then
      out[#out + 1] = "["
      for i = 1, n do
        if i > 1 then out[#out + 1] = "," end
        encode(v[i], ("%s[%d]"):format(path, i), seen, out)
      end
      out[#out + 1] = "]"
    else
      if n > 0 then check.fail("json", nil, "%s mixes a list and named fields", path) end
      table.sort(keys)
      out[#out + 1] = "{"
      local first = true
      for _, k in ipairs(keys) do
        local x = v[k]
        if type(x) ~= "function" then -- (an error's retry)
          if not first then out[#out + 1] = "," end
          first = false
          out[#out + 1] = str(k) .. ":"
          if BYTES[k] and type(x) == "string" then out[#out + 1] = str(hex(x))
          else encode(x, path .. "." .. k, seen, out) end
        end
      end
      out[#out + 1] = "}"
    end
    seen[v] = nil
  else
    check.fail("json", nil, "%s is a %s, which has no JSON form", path, t)
  end
end

--- The JSON text of a value.
-- @param v nil, a boolean, number, string, a table of those, or a module object
-- @treturn string
function json.encode(v)
  local out = {}
  encode(v, "value", {}, out)
  return table.concat(out)
end

--- An error as JSON: {"error": {op, name, errno, message, step, cause, ..., text =
-- its one-line text}}; a Lua error: {"error": {message, traceback}}.
-- @param err an error object or a message
-- @tparam[opt] string traceback where a message (a Lua error, not the module's) came from
function json.error(err, traceback)
  if type(err) ~= "table" then return json.encode {error = {message = tostring(err), traceback = traceback}} end
  local e = json.plain(err)
  e.text = tostring(err)
  return json.encode {error = e}
end

--- An error object's fields as a plain table (nested causes too).
function json.plain(err)
  local e = {}
  for k, x in pairs(err) do
    if type(x) ~= "function" then e[k] = type(x) == "table" and getmetatable(x) == getmetatable(err) and json.plain(x) or x end
  end
  return e
end

return setmetatable(json, {__call = function(_, v) return json.encode(v) end})
