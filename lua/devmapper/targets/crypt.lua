--- crypt: dm-crypt (dm-crypt.c: <cipher> <key> <iv_offset> <dev> <offset>
-- [<#opt> <opt>...]). The key is a dm.key object; by default the kernel
-- gets a keyring reference (":64:logon:devmapper:..."), so no key appears in
-- any table. With keyring = false it goes as hex, filled in by the C core
-- from locked memory on a task marked secure, and reads back as zeros.
-- The cipher name is the kernel's to judge (it loads ciphers on demand);
-- the spec's form, the IV mode and the key size for ciphers known here are
-- checked first.
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
  local head, chain, rest = spec:match("^([^-]*)%-?([^-]*)%-?(.*)$")
  local cipher, count = head:match("^([^:]*):?(.*)$")
  if cipher == "" then return nil, "must start with a cipher name (aes-xts-plain64, ...)" end
  local keycount = 1
  if head:find(":", 1, true) then
    keycount = count:match("^%d+$") and math.tointeger(tonumber(count))
    if not keycount or keycount == 0 or keycount & (keycount - 1) ~= 0 then
      return nil, "the key count after ':' must be a power of 2"
    end
  end
  local iv, ivopts = rest:match("^([^:]*):?(.*)$")
  -- the original format: a bare cipher, or cipher-plain, means cbc-plain
  local legacy = chain == "" or (chain == "plain" and iv == "")
  if legacy then chain, iv = "cbc", "plain" end
  if chain ~= "ecb" and iv == "" then return nil, ("chain mode %s needs an IV mode (e.g. xts-plain64)"):format(check.quote(chain)) end
  if iv ~= "" and not ivs[iv] then return nil, ("unknown IV mode %s"):format(check.quote(iv)) end
  if iv == "essiv" and ivopts == "" then return nil, "essiv needs its hash (essiv:sha256)" end
  return {cipher = cipher, keycount = keycount, chain = chain, iv = iv, legacy = legacy}
end

-- The key sizes the kernel takes for a parsed spec, when known here.
local function allowed(c)
  local k = not c.capi and key_sizes[c.cipher]
  if not k or c.iv == "lmk" or c.iv == "tcw" or c.iv == "elephant" then return nil end
  local mult = c.keycount * (c.chain == "xts" and 2 or 1)
  if k.range then
    return function(n) return n % mult == 0 and n // mult >= k.range[1] and n // mult <= k.range[2] end,
           ("%d to %d bytes in steps of %d"):format(k.range[1] * mult, k.range[2] * mult, mult)
  end
  local set, words = {}, {}
  for i, n in ipairs(k) do set[n * mult] = true; words[i] = tostring(n * mult) end
  return function(n) return set[n] end, table.concat(words, ", ") .. " bytes"
end

local cipher = field.word(function(w)
  local _, why = parse_cipher(w)
  return why
end)

local warned = {}

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
        integrity = field.word(function(w)
          local n, kind = w:match("^(%d+):(.+)$")
          if not n or tonumber(n) < 1 or tonumber(n) > 480 or not (kind:lower() == "aead" or kind:lower() == "none") then
            return "must be <tag bytes, 1 to 480>:aead or :none"
          end
        end),
      },
      omit = {sector_size = 512},
      max = 8,
      fold = true,
    }},
  },
  extra = {"keyring", "sector_size"},
  --- dm.crypt {dev, cipher = "aes-xts-plain64", key = Key, keyring = true, iv_offset =,
  -- offset =, length =, sector_size =, options = {"allow_discards", ...}}
  new = function(opts)
    if type(opts) ~= "table" then return opts end
    local f = {}
    for k, v in pairs(opts) do
      if k == 1 then f.dev = v elseif k ~= "sector_size" then f[k] = v end
    end
    if opts.sector_size ~= nil then
      local o = type(f.options) == "string" and {f.options} or f.options or {}
      if type(o) == "table" then
        local copy = {sector_size = opts.sector_size}
        for k, v in pairs(o) do
          if k == "sector_size" then copy = nil break end
          copy[k] = v
        end
        f.options = copy or o
      end
    end
    local c = type(f.cipher) == "string" and f.cipher:match("^[!-~]+$") and parse_cipher(f.cipher)
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
    local c = parse_cipher(r.cipher)
    local ok, sizes = allowed(c)
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
