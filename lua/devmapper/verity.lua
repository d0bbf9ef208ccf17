--- dm-verity through libcryptsetup, as veritysetup does: `format` makes the
-- hash tree of a data device (on a hash device, or past the data at
-- `hash_offset`) and returns its root hash; `open` maps the data read-only,
-- every block checked against the tree as it is read; `verify` checks
-- every block offline. Hashes and salts are hex strings.
-- @module devmapper.verity
-- @usage local v = dm.verity.format(data, hash)  -- v.root: the root hash, hex
-- local dev = dm.verity.open(data, hash, "image", v.root)
local check = require "devmapper.check"
local device = require "devmapper.device"
local kernel = require "devmapper.kernel"
local scope = require "devmapper.scope"
local target = require "devmapper.target"

-- dm.verity {data, hash, root = hex} is a segment (targets/verity.lua)
local verity = setmetatable({}, {__call = function(_, ...) return target.get("verity").builder(...) end})

local path_of = check.device_path

local function hex_bytes(op, name, v, max)
  if type(v) ~= "string" or #v == 0 or #v % 2 == 1 or #v > 2 * max or v:find("[^%x]") then
    check.fail(op, nil, "field '%s' must be an even number of hex digits (at most %d bytes)", name, max)
  end
  return (v:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end))
end

local function to_hex(s) return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end)) end

local function block_size(op, name, v)
  if v == nil then return nil end
  if math.type(v) ~= "integer" or v < 512 or v > 65536 or v & (v - 1) ~= 0 then
    check.fail(op, nil, "field '%s' must be a power of 2 from 512 to 65536 (bytes), got %s", name, tostring(v))
  end
  return v
end

-- The options veritysetup takes, checked; as core.verity_* take them.
local KNOWN = {hash = true, salt = true, data_block_size = true, hash_block_size = true, data_blocks = true,
               hash_offset = true, superblock = true, uuid = true}
local function options(op, opts, known)
  opts = check.fields(op, opts, known)
  local o = {}
  if opts.hash ~= nil then
    if type(opts.hash) ~= "string" or not opts.hash:match("^[%w%-]+$") then
      check.fail(op, nil, "field 'hash' must be a hash name (sha256, sha512, ...)")
    end
    o.hash = opts.hash
  end
  if opts.salt ~= nil then
    -- "-" is veritysetup's "no salt"
    o.salt = opts.salt == "-" and "" or hex_bytes(op, "salt", opts.salt, 256)
    if o.salt == "" then o.salt_size = 0 end
  end
  o.data_block_size = block_size(op, "data_block_size", opts.data_block_size)
  o.hash_block_size = block_size(op, "hash_block_size", opts.hash_block_size)
  for _, f in ipairs {"data_blocks", "hash_offset"} do
    local v = opts[f]
    if v ~= nil and (math.type(v) ~= "integer" or v < 0) then
      check.fail(op, nil, "field '%s' must be an integer >= 0, got %s", f, tostring(v))
    end
    o[f] = v
  end
  if o.hash_offset and o.hash_offset % 512 ~= 0 then
    check.fail(op, nil, "field 'hash_offset' must be a multiple of 512 (bytes), got %d", o.hash_offset)
  end
  if opts.superblock ~= nil and type(opts.superblock) ~= "boolean" then
    check.fail(op, nil, "field 'superblock' must be a boolean")
  end
  o.superblock = opts.superblock
  if opts.uuid ~= nil then
    if type(opts.uuid) ~= "string" or #opts.uuid ~= 36 or not opts.uuid:match("^%x+%-%x+%-%x+%-%x+%-%x+$") then
      check.fail(op, nil, "field 'uuid' must be a UUID (8-4-4-4-12 hex digits)")
    end
    o.uuid = opts.uuid
  end
  return o
end

--- Make the hash tree of `data` on `hash` (veritysetup format).
-- @param data the data device (path, Loop or Device)
-- @param hash the hash device (may be data itself, with hash_offset past the data)
-- @tparam[opt] table opts {hash = "sha256", salt = hex (default: random; "-" for none),
--   data_block_size = 4096, hash_block_size = 4096, data_blocks = (default: all),
--   hash_offset = bytes, superblock = true, uuid =}
-- @treturn table {root = hex, salt = hex, hash, data_blocks, data_block_size,
--   hash_block_size, hash_offset, uuid}
function verity.format(data, hash, opts)
  local op = "verity.format"
  local o = options(op, opts, KNOWN)
  local facts = kernel.call("verity_format", path_of(op, "data", data), path_of(op, "hash", hash), o)
  if not facts then return nil end   -- a dry run
  facts.root, facts.salt = to_hex(facts.root), to_hex(facts.salt or "")
  return facts
end

-- The same options, for a tree without a superblock (its parameters must be given).
local OPEN = {}
for k in pairs(KNOWN) do OPEN[k] = k ~= "uuid" end
local function open_options(op, opts)
  local o = options(op, opts, OPEN)
  if o.superblock == false and o.salt == nil then
    check.fail(op, nil, "field 'salt' is required without a superblock (hex, or \"-\" for none)")
  end
  if o.superblock ~= false then
    -- read from the superblock: a value given here would be ignored
    for _, f in ipairs {"hash", "salt", "data_block_size", "hash_block_size", "data_blocks"} do
      if o[f] ~= nil then
        check.fail(op, nil, "field '%s' comes from the superblock: give it only with superblock = false", f)
      end
    end
  end
  return o
end

--- Map `data` read-only as /dev/mapper/name, checked against the tree
-- (veritysetup open). Tracked by an open dm.scope().
-- @param data the data device: a path, a Loop or a Device
-- @param hash the hash device (the tree, after its superblock)
-- @tparam string name the device-mapper name
-- @tparam string root the root hash, hex
-- @tparam[opt] table opts {hash_offset =; and, for superblock = false, the
--   format's parameters: hash, salt, data_block_size, hash_block_size, data_blocks}
-- @treturn Device
function verity.open(data, hash, name, root, opts)
  local op = "verity.open"
  check.name(op, name)
  local d, h = path_of(op, "data", data), path_of(op, "hash", hash)
  kernel.call("verity_open", d, h, name, hex_bytes(op, "root", root, 64), open_options(op, opts))
  scope.track("verity volume " .. name, function()
    -- still this volume (libcryptsetup's UUID), not another device made under the name since
    local info = kernel.call("dm_info", name)
    if info and (info.uuid or ""):match("^CRYPT%-VERITY") then kernel.call("cryptsetup_close", name) end
  end)
  return device.named(name)
end

--- Check every data block against the tree, offline (veritysetup verify).
-- Raises an error with `corrupt = true` when the data does not match.
-- @treturn boolean true
function verity.verify(data, hash, root, opts)
  local op = "verity.verify"
  local d, h = path_of(op, "data", data), path_of(op, "hash", hash)
  local ok, err = pcall(kernel.call, "verity_open", d, h, nil, hex_bytes(op, "root", root, 64), open_options(op, opts))
  if ok then return true end
  if type(err) == "table" and err.errno == 1 then err.corrupt = true end
  error(err, 0)
end

--- Close a verity volume (veritysetup close).
-- @param dev the name or its Device
function verity.close(dev)
  local name = type(dev) == "table" and dev.name or dev
  check.name("verity.close", name)
  kernel.call("cryptsetup_close", name)
end

return verity
