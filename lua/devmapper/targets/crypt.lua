--- @module devmapper

--- crypt: dm-crypt (dm-crypt.c: <cipher> <key> <iv_offset> <dev> <offset>
-- [<#opt> <opt>...]). The key is a dm.key object; by default the kernel
-- gets a keyring reference (":64:logon:devmapper:..."), so no key appears in
-- any table. With keyring = false it goes as hex, filled in by the C core
-- from locked memory on a task marked secure, and reads back as zeros.
-- The cipher name is the kernel's to judge (it loads ciphers on demand);
-- the spec's form, the IV mode and the key size for ciphers known here are
-- checked first.
--
-- Built as dm.crypt {dev, cipher = "aes-xts-plain64", key = Key, keyring = true, iv_offset =,
-- offset =, length =, sector_size =, options = {"allow_discards", ...}}
-- @function crypt
-- @within Target builders
-- @usage dm.crypt {l1, key = dm.key.random(64)}
local check = require "devmapper.check"
local field = require "devmapper.field"
local kernel = require "devmapper.kernel"
local target = require "devmapper.target"

local ivs = {plain = true, plain64 = true, plain64be = true, essiv = true, benbi = true, null = true,
             lmk = true, tcw = true, random = true, eboiv = true, elephant = true}

-- Key sizes (bytes) of one part, for the block ciphers known here: a set, or {min, max}.
local key_sizes = {aes = {16, 24, 32}, twofish = {16, 24, 32}, camellia = {16, 24, 32}, sm4 = {16},
                   des3_ede = {24}, des = {8}, serpent = {range = {0, 32}}, cipher_null = {0}}

-- cipher[:keycount][-chain[-iv[:ivopts]]] (the legacy form) or capi:<spec>-iv[:ivopts].
-- Returns the parts, or nil and the rule broken.
local function parse_cipher(spec)
  if spec:sub(1, 5) == "capi:" then
    if #spec == 5 then return nil, "capi: must be followed by a crypto API spec" end
    local iv = spec:match("%-([^-:]+)[^-]*$")
    if iv and not ivs[iv] then return nil, ("unknown IV mode %s"):format(check.quote(iv)) end
    return {capi = true}
  end
  if #spec >= 16 and not spec:find("[^%x]") then
    return nil, "looks like a hex key, not a cipher: crypt takes <cipher> <key> <iv_offset> <dev> <offset>"
  end
  -- no cipher has them; "<key>" is where the C core writes a hex key
  if spec:find("[<>]") then return nil, "must not hold '<' or '>'" end
  -- as crypt_ctr_cipher_old splits it: a part that is absent (nil) is not an empty one
  local head, after = spec:match("^([^-]*)(.*)$")
  local chain, rest = after:match("^%-([^-]*)%-?(.*)$")
  if rest == "" and not after:find("^%-[^-]*%-") then rest = nil end
  local cipher, count = head:match("^([^:]*):?(.*)$")
  if cipher == "" then return nil, "must start with a cipher name (aes-xts-plain64, ...)" end
  local keycount = 1
  if head:find(":", 1, true) then
    keycount = count:match("^%d+$") and math.tointeger(tonumber(count))
    if not keycount or keycount == 0 or keycount & (keycount - 1) ~= 0 then
      return nil, "the key count after ':' must be a power of 2"
    end
  end
  local iv, ivopts
  if rest then iv, ivopts = rest:match("^([^:]*):?(.*)$") end
  -- the original format: a bare cipher, or cipher-plain, means cbc-plain
  local legacy = chain == nil or (chain == "plain" and iv == nil)
  if legacy then chain, iv = "cbc", "plain" end
  if chain == "" then return nil, "the chain mode after the first '-' must not be empty" end
  if chain ~= "ecb" and iv == nil then return nil, ("chain mode %s needs an IV mode (e.g. xts-plain64)"):format(check.quote(chain)) end
  if iv and not ivs[iv] then return nil, ("unknown IV mode %s"):format(check.quote(iv)) end
  if iv == "essiv" and ivopts == "" then return nil, "essiv needs its hash (essiv:sha256)" end
  return {cipher = cipher, keycount = keycount, chain = chain, iv = iv or "", legacy = legacy}
end

-- The key sizes the kernel takes for a parsed spec, when known here: the
-- key is split into keycount parts; a part is the cipher's key, twice that
-- for xts, and 16 bytes more (the tweak) for lrw.
local function key_rule(c)
  local k = not c.capi and key_sizes[c.cipher]
  if not k or c.iv == "lmk" or c.iv == "tcw" or c.iv == "elephant" then return nil end
  local function total(n)
    local part = c.chain == "xts" and 2 * n or c.chain == "lrw" and n + 16 or n
    return c.keycount * part
  end
  if k.range then
    local step = c.keycount * (c.chain == "xts" and 2 or 1)
    local lo, hi = total(k.range[1]), total(k.range[2])
    return function(n) return n >= lo and n <= hi and (n - lo) % step == 0 end,
           ("%d to %d bytes in steps of %d"):format(lo, hi, step)
  end
  local set, words = {}, {}
  for i, n in ipairs(k) do set[total(n)] = true; words[i] = tostring(total(n)) end
  return function(n) return set[n] end, table.concat(words, ", ") .. " bytes"
end

-- Every resolution checks its cipher again (a stack re-apply, a reload):
-- good short specs are kept (a few hundred at most). A refusal is not:
-- its text depends on whether words are being redacted.
local parsed, count = {}, 0
local function cipher_facts(spec)
  local p = parsed[spec]
  if p then return p end
  local c, why = parse_cipher(spec)
  p = {c = c, why = why}
  if c then p.ok, p.sizes = key_rule(c) end
  if c and #spec <= 128 then
    if count == 256 then parsed, count = {}, 0 end
    parsed[spec], count = p, count + 1
  end
  return p
end

local cipher = field.word(function(w)
  return cipher_facts(w).why
end)

local warned = {}

-- integrity:<tag bytes>:aead|none; the kernel reads the number with
-- sscanf("%u") and prints it back in plain decimal.
local integrity = {}
function integrity.text(w)
  local n, kind = w:match("^(%d+):(.+)$")
  local v = n and #n <= 9 and math.tointeger(tonumber(n))
  if not v or v < 1 or v > 480 or not (kind:lower() == "aead" or kind:lower() == "none") then
    return nil, "must be <tag bytes, 1 to 480>:aead or :none"
  end
  return v .. ":" .. kind
end
integrity.lua = integrity.text
function integrity.format(v) return v end

return target.define {
  type = "crypt",
  params = {
    {"cipher", cipher, default = "aes-xts-plain64"},
    {"key", field.key, keyring = "keyring"},
    {"iv_offset", field.sector, default = 0},
    {"dev", field.device},
    {"offset", field.sector, default = 0},
    {"options", field.options {
      order = {"allow_discards", "same_cpu_crypt", "submit_from_crypt_cpus", "no_read_workqueue",
               "no_write_workqueue", "integrity", "sector_size", "iv_large_sectors"},
      values = {
        sector_size = field.number {parser = "scanf", bits = 16, min = 512, max = 4096, power_of_2 = true},
        integrity = integrity,
      },
      omit = {sector_size = 512},
      max = 8,
      fold = true,
    }},
  },
  extra = {"keyring", "sector_size"},
  -- dm.crypt {dev, cipher = "aes-xts-plain64", key = Key, keyring = true, iv_offset =,
  -- offset =, length =, sector_size =, options = {"allow_discards", ...}}
  new = function(opts)
    local f = target.fields("crypt", opts, {"dev"})
    -- sector_size = n is short for the option: into the options, once
    local sector_size = f.sector_size
    f.sector_size = nil
    if sector_size ~= nil then
      local o = f.options
      if type(o) == "string" then o = {o} end
      if o == nil or type(o) == "table" then
        local copy = {}
        for k, v in pairs(o or {}) do copy[k] = v end
        if copy.sector_size ~= nil then check.fail("crypt", nil, "field 'sector_size' is given twice (also in options)") end
        copy.sector_size = sector_size
        f.options = copy
      end
    end
    local c = type(f.cipher) == "string" and not field.word_rule(f.cipher) and cipher_facts(f.cipher).c
    if c and c.iv == "plain" and c.legacy and not warned[f.cipher] then
      warned[f.cipher] = true
      kernel.warn(("cipher '%s' (the article's) repeats its IV beyond 2 TiB; prefer aes-xts-plain64"):format(f.cipher))
    end
    return f
  end,
  length = function(r, ctx) return ctx.facts(r.dev).sectors - r.offset end,
  block = function(r) return r.options.sector_size or 512 end,
  areas = function(r) return {{r.dev, r.offset, r.length, "offset"}} end,
  check = function(r, _, fail)
    local c = cipher_facts(r.cipher)
    local ok, sizes = c.ok, c.sizes
    local n = field.key.bytes(r.key)
    if ok and not ok(n) then fail("key", "must be %s for %s (it is %d)", sizes, r.cipher, n) end
    local per = (r.options.sector_size or 512) // 512
    if r.length % per ~= 0 then
      fail("length", "%d must be a multiple of sector_size (%d sectors)", r.length, per)
    end
    if r.iv_offset % per ~= 0 then
      fail("iv_offset", "%d must be a multiple of sector_size (%d sectors)", r.iv_offset, per)
    end
  end,
}
