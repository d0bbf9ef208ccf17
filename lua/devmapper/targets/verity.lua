--- @module devmapper

--- verity: a read-only device whose every block is checked against a hash
-- tree (dm-verity-target.c: <version> <data dev> <hash dev> <data block
-- size> <hash block size> <data blocks> <hash start block> <algorithm>
-- <root digest> <salt> [<#opt> <opt>...]). Built from Lua, the format's
-- parameters come from the hash device's superblock (veritysetup's, or
-- dm.verity.format's) unless given; the root hash is always given.
-- Optional arguments with values (FEC, root hash signatures) are not
-- supported here yet: they are refused.
--
-- Built as dm.verity {data, hash, root = hex, hash_offset = bytes (where the superblock is),
-- options = {...}, length =; or every parameter, for a tree without a superblock}
-- @function verity
-- @within Target builders
-- @usage dm.verity {data, hash, root = v.root}
local check = require "devmapper.check"
local core = require "devmapper.core"
local field = require "devmapper.field"
local target = require "devmapper.target"

-- Hex digits, as the kernel's hex2bin takes them; printed back in lower case.
local function hex(what, dash)
  local kind = {}
  function kind.text(w)
    if dash and w == "-" then return w end
    if #w == 0 or #w % 2 == 1 or w:find("[^%x]") then
      return nil, ("must be %s: an even number of hex digits%s"):format(what, dash and ", or - for none" or "")
    end
    return w:lower()
  end
  function kind.lua(v)
    if type(v) ~= "string" then return nil, ("must be a string of hex digits, got %s"):format(type(v)) end
    return kind.text(v)
  end
  function kind.format(v) return v end
  return kind
end

-- the kernel's bounds: data blocks at most a page (4096 bytes on x86), hash blocks INT_MAX
local data_block = field.number {parser = "scanf", bits = 32, min = 512, max = 4096, power_of_2 = true}
local hash_block = field.number {parser = "scanf", bits = 32, min = 512, max = 0x7fffffff, power_of_2 = true}
local MODES = {"ignore_corruption", "restart_on_corruption", "panic_on_corruption"}

local function to_hex(s) return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end)) end

-- The format's parameters from the superblock of the hash device at hash_offset (bytes).
local function from_superblock(f)
  local h = f.hash
  local path = type(h) == "table" and h.path or (type(h) == "string" and h:sub(1, 1) == "/" and h)
  if not path then
    check.fail("verity", nil, "field 'data_blocks' is required when field 'hash' (%s) is not a device that "
               .. "exists now (a Loop, a Device or a path), whose superblock could be read", tostring(h))
  end
  local offset = f.hash_offset or 0
  f.hash_offset = nil
  if math.type(offset) ~= "integer" or offset < 0 or offset % 512 ~= 0 then
    check.fail("verity", nil, "field 'hash_offset' must be bytes, a multiple of 512, got %s", tostring(offset))
  end
  local sb = core.verity_info(path, offset)
  if offset % sb.hash_block_size ~= 0 then
    check.fail("verity", nil, "field 'hash_offset' (%d) must be a multiple of the hash block size (%d)",
               offset, sb.hash_block_size)
  end
  for k, v in pairs {data_block_size = sb.data_block_size, hash_block_size = sb.hash_block_size,
                     data_blocks = sb.data_blocks, algorithm = sb.hash,
                     salt = #sb.salt > 0 and to_hex(sb.salt) or "-",
                     hash_start = offset // sb.hash_block_size + 1} do
    if f[k] ~= nil and f[k] ~= v then
      check.fail("verity", nil, "field '%s' (%s) is not the superblock's (%s)", k, tostring(f[k]), tostring(v))
    end
    f[k] = v
  end
  return f
end

return target.define {
  type = "verity",
  params = {
    {"version", field.number {parser = "scanf", bits = 32, max = 1}, default = 1},
    {"data", field.device},
    {"hash", field.device},
    {"data_block_size", data_block, default = 4096},
    {"hash_block_size", hash_block, default = 4096},
    {"data_blocks", field.number {parser = "scanf"}},
    {"hash_start", field.number {parser = "scanf"}},
    {"algorithm", field.word(), default = "sha256"},
    {"root", hex("the root hash")},
    {"salt", hex("the salt", true), default = "-"},
    {"options", field.options {order = {"ignore_corruption", "restart_on_corruption", "panic_on_corruption",
                                        "ignore_zero_blocks", "check_at_most_once"},
                               max = 4, fold = true}},
  },
  extra = {"hash_offset"},
  readonly = true,   -- the kernel refuses it on a writable device
  -- dm.verity {data, hash, root = hex, hash_offset = bytes (where the superblock is),
  -- options = {...}, length =; or every parameter, for a tree without a superblock}
  new = function(opts)
    local f = target.fields("verity", opts, {"data", "hash"})
    if f.data_blocks == nil then return from_superblock(f) end
    if f.hash_offset ~= nil then check.fail("verity", nil, "field 'hash_offset' is for reading a superblock: give hash_start") end
    return f
  end,
  length = function(r) return r.data_blocks * (r.data_block_size // 512) end,
  areas = function(r) return {{r.data, 0, r.length, "data"}} end,
  check = function(r, ctx, fail)
    -- the algorithm is the kernel crypto API's to judge; where OpenSSL knows it too, its size is checked
    local size = core.digest_size(r.algorithm)
    if size and #r.root ~= 2 * size then
      fail("root", "must be %d hex digits for %s (it has %d)", 2 * size, r.algorithm, #r.root)
    end
    if size and r.hash_block_size < 2 * size then
      fail("hash_block_size", "%d must hold two %s digests (%d bytes)", r.hash_block_size, r.algorithm, 2 * size)
    end
    local modes = 0
    for _, m in ipairs(MODES) do if r.options[m] then modes = modes + 1 end end
    if modes > 1 then fail("options", "may hold only one of %s", table.concat(MODES, ", ")) end
    if r.length > r.data_blocks * (r.data_block_size // 512) then
      fail("length", "%d is past the %d data blocks of %d bytes", r.length, r.data_blocks, r.data_block_size)
    end
    for _, d in ipairs {{"data", "data_block_size"}, {"hash", "hash_block_size"}} do
      local f = ctx.facts(r[d[1]])
      if f and r[d[2]] < (f.logical_block_size or 512) then
        fail(d[2], "%d is below the logical block size of %s (%d bytes)", r[d[2]], ctx.name(r[d[1]]), f.logical_block_size)
      end
    end
  end,
  -- "V" verified so far, "C" a corruption found (the kernel's one word)
  status = function(words) return {state = words[1], corrupted = words[1] == "C"} end,
}
