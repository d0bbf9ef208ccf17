--- @module devmapper

--- luks: a LUKS volume's data area, mapped as `cryptsetup open` maps it.
-- Not a kernel target: when a table is resolved it becomes the crypt
-- segment the header describes (cipher, data offset, sector size), with
-- the volume key unlocked through libcryptsetup by the passphrase (or
-- given), so a stack creates, compares, tears down and cleans it up as any
-- crypt member. The volume key lives in a Key, kept per segment while the
-- header still takes it (checked each time: cheap), so a re-apply runs no
-- PBKDF again, and a reencrypted or re-made volume is unlocked anew.
--
-- Built as dm.luks {dev, passphrase = Key | volume_key = Key, discards = false, length =}
-- @function luks
-- @within Target builders
-- @usage dm.stack {prefix = "p", vault = dm.luks {l1, passphrase = k, discards = true}}
local check = require "devmapper.check"
local core = require "devmapper.core"
local field = require "devmapper.field"
local kernel = require "devmapper.kernel"
local key = require "devmapper.key"
local target = require "devmapper.target"

local unlocked = setmetatable({}, {__mode = "k"})   -- segment -> {path, vk, facts}

-- The path libcryptsetup opens for the device a segment names.
local function path_of(dev, ctx)
  if type(dev) == "table" and dev.path then return dev.path end
  if type(dev) == "string" and dev:sub(1, 1) == "/" then return dev end
  return ctx.name(dev)
end

-- The volume key and the header's facts, unlocked once per segment and volume key.
local function unlock(s, path)
  local u = unlocked[s]
  if u and u.path == path then
    local ok, vk, facts = pcall(core.luks_unlock, path, "volume_key", u.vk)
    if ok then return vk, facts end
  end
  local how = s.volume_key and "volume_key" or "passphrase"
  local vk, facts = core.luks_unlock(path, how, s.volume_key or s.passphrase)
  unlocked[s] = {path = path, vk = vk, facts = facts}
  return vk, facts
end

-- The crypt options: the header's persistent flags (as cryptsetup open
-- applies them), and allow_discards if asked.
local function options_of(flags, discards)
  local o, seen = {}, {}
  for _, f in ipairs(flags or {}) do o[#o + 1], seen[f] = f, true end
  if discards and not seen.allow_discards then o[#o + 1] = "allow_discards" end
  return #o > 0 and o or nil
end

return target.define {
  type = "luks",
  params = {{"dev", field.device}},
  extra = {"passphrase", "volume_key", "discards"},
  -- dm.luks {dev, passphrase = Key | volume_key = Key, discards = false, length =}
  new = function(opts)
    local f = target.fields("luks", opts, {"dev"})
    if (f.passphrase ~= nil) == (f.volume_key ~= nil) then
      check.fail("luks", nil, "give exactly one of the fields 'passphrase' and 'volume_key'")
    end
    for _, k in ipairs {"passphrase", "volume_key"} do
      if f[k] ~= nil and not key.is(f[k]) then
        check.fail("luks", nil, "field '%s' must be a dm.key object, got %s", k, type(f[k]))
      end
    end
    if f.discards ~= nil and type(f.discards) ~= "boolean" then
      check.fail("luks", nil, "field 'discards' must be a boolean, got %s", type(f.discards))
    end
    return f
  end,
  -- shown as itself only where the header cannot be read (a plan over a member still to be made)
  length = function(r, ctx) return ctx.facts(r.dev).sectors end,
  -- nil (shown as itself) where there is no header to read yet: a dry run,
  -- or a plan over a member that the apply will make first
  expand = function(s, ctx, fail)
    local f = ctx.facts(s.dev)
    if kernel.dry_run or (f and f.planned) then return nil end
    local vk, facts = unlock(s, path_of(s.dev, ctx))
    if facts.integrity then
      fail("dev", "is LUKS2 with integrity (%s), which needs dm-integrity beneath: open it with dm.luks.open", facts.integrity)
    end
    return target.get("crypt").builder {
      s.dev, cipher = facts.cipher .. "-" .. facts.mode, key = vk, offset = facts.data_offset,
      iv_offset = facts.iv_offset, length = s.length,
      sector_size = facts.sector_size ~= 512 and facts.sector_size or nil,
      options = options_of(facts.options, s.discards),
    }
  end,
}
