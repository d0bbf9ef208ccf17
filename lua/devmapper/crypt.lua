--- dm-crypt targets. Keys are dm.key objects: by default the kernel gets a
-- keyring reference (":64:logon:devmapper:..."), so no key appears in any
-- table; with {keyring = false} the key goes in hex, built in locked C memory
-- on a task marked secure, and reads back as zeros, as dmsetup shows it.
local check = require "devmapper.check"
local kernel = require "devmapper.kernel"
local target = require "devmapper.target"
local scope = require "devmapper.scope"
local core = require "devmapper.core"

local crypt = {}

local block_ciphers = {aes = true, twofish = true, serpent = true, camellia = true, sm4 = true}
local ivs = {plain = true, plain64 = true, plain64be = true, essiv = true, benbi = true, null = true,
             lmk = true, tcw = true, random = true, eboiv = true, elephant = true}
local flag_options = {allow_discards = true, same_cpu_crypt = true, submit_from_crypt_cpus = true,
                      no_read_workqueue = true, no_write_workqueue = true, iv_large_sectors = true}

-- cipher[:keycount]-chain-iv[:ivopts], the legacy cipher-iv (chain cbc), or capi:...
local function parse_cipher(spec)
  if spec:match("^capi:%S+$") then return {capi = true} end
  local cipher, count, rest = spec:match("^(%w+):?(%d*)%-(.+)$")
  if not cipher then return nil end
  local chain, iv, ivopts = rest:match("^(%w+)%-(%w+):?(.*)$")
  if not chain then chain, iv, ivopts = "cbc", rest:match("^(%w+):?(.*)$") end
  if not iv or not ivs[iv] then return nil end
  return {cipher = cipher, keycount = tonumber(count) or 1, chain = chain, iv = iv, ivopts = ivopts,
          legacy = rest:match("^%w+%-") == nil}
end

-- Key sizes (bytes) the kernel accepts for a parsed cipher spec, or nil if unknown.
local function key_sizes(c)
  if c.capi or not block_ciphers[c.cipher] then return nil end
  local mult = (c.chain == "xts" and 2 or 1) * c.keycount
  return {16 * mult, 24 * mult, 32 * mult}
end

local warned = false

--- A dm-crypt segment.
-- @tparam table opts {dev, cipher = "aes-xts-plain64", key = dm.key object,
--   keyring = true, iv_offset = 0, offset = 0, length = ?, sector_size = 512,
--   options = {"allow_discards", ...}}
-- @treturn Target
-- @usage dm.create("secret", dm.crypt {l1, key = dm.key.random(64)})
function crypt.new(opts)
  if type(opts) ~= "table" then check.fail("crypt", nil, "expected a table of options, got %s", type(opts)) end
  local seg = target.new("crypt", {
    dev = opts[1] or opts.dev, cipher = opts.cipher or "aes-xts-plain64", key = opts.key,
    keyring = opts.keyring ~= false, iv_offset = target.sectors_opt(opts.iv_offset, "iv_offset") or 0,
    offset = target.sectors_opt(opts.offset, "offset") or 0, sector_size = opts.sector_size,
    options = opts.options or {}, length = opts.length,
  })
  if seg.keyring and type(seg.key) == "userdata" then
    -- named after the key: the same key, the same table text in every run
    seg.keyref_desc = "devmapper:" .. core.key_fingerprint(seg.key)
  end
  local c = parse_cipher(seg.cipher)
  if c and c.legacy and c.iv == "plain" and not warned then
    warned = true
    io.stderr:write(("warning: cipher %q (the article's) repeats its IV beyond 2 TiB; prefer aes-xts-plain64\n")
                    :format(seg.cipher))
  end
  return seg
end

local function options_list(s)
  local o = {}
  for _, x in ipairs(s.options) do o[#o + 1] = x end
  if s.sector_size and s.sector_size ~= 512 then o[#o + 1] = "sector_size:" .. s.sector_size end
  return o
end

-- What stands where the key goes: a keyring reference, "<key>" for the C
-- core to fill in, or zeros for display.
local function key_field(s, ctx)
  if s.keyref then return s.keyref end -- parsed from the kernel's text
  if not s.key then return "-" end
  if s.keyring then return (":%d:logon:%s"):format(#s.key, s.keyref_desc) end
  if ctx.kernel then return "<key>" end
  return ("0"):rep(2 * #s.key)
end

target.define("crypt", {
  params = function(s, ctx)
    local p = {s.cipher, key_field(s, ctx), s.iv_offset, ctx.dev(s.dev), s.offset}
    local o = options_list(s)
    if #o > 0 then p[#p + 1] = #o .. " " .. table.concat(o, " ") end
    return table.concat(p, " ")
  end,
  parse = function(w)
    -- "<key>": a table read with {keys = true}, whose key is a Key object
    local s = {cipher = w[1], keyref = w[2] ~= "<key>" and w[2] or nil, iv_offset = math.tointeger(tonumber(w[3])),
               dev = w[4], offset = math.tointeger(tonumber(w[5])), options = {},
               keyring = (w[2] or ""):sub(1, 1) == ":"}
    for i = 7, 6 + (tonumber(w[6]) or 0) do
      local ss = w[i]:match("^sector_size:(%d+)$")
      if ss then s.sector_size = tonumber(ss) else s.options[#s.options + 1] = w[i] end
    end
    return s
  end,
  length = function(s, ctx) return ctx.facts(s.dev).sectors - s.offset end,
  devices = function(s) return {s.dev} end,
  check = function(s, ctx, fail)
    if s.dev == nil then fail("dev", "is required (the device to encrypt)") end
    local c = parse_cipher(s.cipher or "")
    if not c then
      fail("cipher", "must be cipher[:keycount]-chain-iv[:ivopts] (e.g. aes-xts-plain64) or capi:..., got %q",
           tostring(s.cipher))
    end
    if not s.keyref then
      if type(s.key) ~= "userdata" then
        fail("key", "must be a dm.key object (dm.key.random, dm.key.derive, dm.key.from_hex), got %s", type(s.key))
      end
      local sizes = key_sizes(c)
      if sizes and sizes[1] ~= #s.key and sizes[2] ~= #s.key and sizes[3] ~= #s.key then
        fail("key", "must be %d, %d or %d bytes for %s (it is %d)", sizes[1], sizes[2], sizes[3], s.cipher, #s.key)
      end
    end
    local ss = s.sector_size or 512
    if math.type(ss) ~= "integer" or ss < 512 or ss > 4096 or ss & (ss - 1) ~= 0 then
      fail("sector_size", "must be a power of 2 from 512 to 4096, got %s", tostring(ss))
    end
    local per = ss // 512
    if s.length and s.length % per ~= 0 then
      fail("length", "%d must be a multiple of sector_size (%d sectors)", s.length, per)
    end
    if s.iv_offset % per ~= 0 then fail("iv_offset", "%d must be a multiple of sector_size (%d sectors)", s.iv_offset, per) end
    for _, o in ipairs(s.options) do
      if not flag_options[o] then
        fail("options", "unknown option %q (known: allow_discards, same_cpu_crypt, submit_from_crypt_cpus, "
             .. "no_read_workqueue, no_write_workqueue, iv_large_sectors; sector_size via its own field)", tostring(o))
      end
    end
    target.check_fits(s, ctx, fail)
  end,
  -- Right before the kernel gets the table: put the key in the keyring.
  prepare = function(s)
    if s.key and s.keyring and not s.in_keyring then
      kernel.call("key_add", s.keyref_desc, s.key)
      s.in_keyring = true
      scope.track("key " .. s.keyref_desc, function() pcall(crypt.unlink_unused, {[s.keyref_desc] = true}) end)
    end
  end,
  unprepare = function(s)
    if s.in_keyring then
      pcall(crypt.unlink_unused, {[s.keyref_desc] = true})
      s.in_keyring = nil
    end
  end,
})

local function keyring_descs(targets, into)
  for _, seg in ipairs(targets) do
    local desc = seg.type == "crypt" and seg.params:match("^%S+ :%d+:logon:(devmapper:%S+)")
    if desc then into[desc] = true end
  end
  return into
end

--- Unlink our keyring keys with these descriptions ({[desc] = true}),
-- except those a live device's table still names (devices that share a key
-- share its keyring entry; a snapshot's -real device carries its origin's table).
function crypt.unlink_unused(descs)
  if next(descs) == nil then return end
  for _, d in ipairs(kernel.call("dm_list")) do
    local ok, t = pcall(kernel.call, "dm_table", d.name)
    if ok then
      for desc in pairs(keyring_descs(t, {})) do descs[desc] = nil end
    end
  end
  for desc in pairs(descs) do pcall(kernel.call, "key_unlink", desc) end
end

--- After a device dropped a table (removed, or reloaded with another):
-- unlink the keyring keys it named that no device uses any more.
function crypt.unlink_keys(_, old)
  crypt.unlink_unused(keyring_descs(old, {}))
end

return crypt
