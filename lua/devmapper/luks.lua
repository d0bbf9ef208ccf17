--- LUKS volumes through libcryptsetup, as `cryptsetup luksFormat`, `open`,
-- `close`, `luksAddKey`, `luksRemoveKey`, `luksChangeKey`, `luksKillSlot`,
-- `luksDump` and `isLuks` do. Passphrases and volume keys are Keys (from
-- dm.key.read, prompt, random, ...): they go from locked memory straight to
-- libcryptsetup and never become Lua strings. LUKS2 volumes reach the
-- kernel with their volume key in the keyring (libcryptsetup's default).
-- @module devmapper.luks
-- @usage dm.luks.format(l1, {passphrase = dm.key.prompt("New passphrase: ", {verify = true})})
local check = require "devmapper.check"
local device = require "devmapper.device"
local kernel = require "devmapper.kernel"
local key = require "devmapper.key"
local keyring = require "devmapper.keyring"
local progress = require "devmapper.progress"
local scope = require "devmapper.scope"
local target = require "devmapper.target"

-- dm.luks {dev, passphrase = k} is a segment (targets/luks.lua): a stack member
local luks = setmetatable({}, {__call = function(_, ...) return target.get("luks").builder(...) end})

local options = check.fields
local function path_of(op, dev) return check.device_path(op, "device", dev) end

local function a_key(op, name, v, what)
  if not key.is(v) then
    check.fail(op, nil, "field '%s' must be a dm.key object (%s), got %s", name, what, type(v))
  end
  return v
end

local function integer(op, name, v, min, max)
  if math.type(v) ~= "integer" or v < min or v > max then
    check.fail(op, nil, "field '%s' must be an integer from %d to %d, got %s", name, min, max, tostring(v))
  end
  return v
end

-- opts.pbkdf as libcryptsetup takes it; time in seconds (cryptsetup's --iter-time is in ms).
local function pbkdf(op, p, version)
  if p == nil then return nil end
  p = options(op, p, {type = true, hash = true, time = true, iterations = true, memory = true, parallel = true})
  local out = {type = p.type or (version == 1 and "pbkdf2" or "argon2id"), hash = p.hash or "sha256"}
  if out.type ~= "pbkdf2" and out.type ~= "argon2id" and out.type ~= "argon2i" then
    check.fail(op, nil, "field 'pbkdf.type' must be argon2id, argon2i or pbkdf2, got %s", check.quote(out.type))
  end
  if version == 1 and out.type ~= "pbkdf2" then
    check.fail(op, nil, "field 'pbkdf.type' must be pbkdf2 for LUKS1 (it has no argon2)")
  end
  if p.hash ~= nil and (type(p.hash) ~= "string" or not p.hash:match("^[%w%-]+$")) then
    check.fail(op, nil, "field 'pbkdf.hash' must be a hash name (sha256, sha512, ...)")
  end
  if p.time ~= nil then
    if type(p.time) ~= "number" or p.time <= 0 or p.time > 3600 then
      check.fail(op, nil, "field 'pbkdf.time' must be seconds, more than 0 and at most 3600")
    end
    out.time_ms = math.max(1, math.floor(p.time * 1000 + 0.5))
  end
  if p.iterations ~= nil then
    -- fixed costs, as cryptsetup --pbkdf-force-iterations: no benchmark
    out.iterations = integer(op, "pbkdf.iterations", p.iterations, out.type == "pbkdf2" and 1000 or 4, 0xffffffff)
    if p.time ~= nil then check.fail(op, nil, "fields 'pbkdf.time' and 'pbkdf.iterations' exclude each other") end
  end
  if out.type == "pbkdf2" then
    if p.memory ~= nil or p.parallel ~= nil then
      check.fail(op, nil, "fields 'pbkdf.memory' and 'pbkdf.parallel' are for argon2 only")
    end
  else
    if p.hash ~= nil then check.fail(op, nil, "field 'pbkdf.hash' is for pbkdf2 only") end
    out.memory = p.memory and integer(op, "pbkdf.memory", p.memory, 32, 4 * 1024 * 1024)   -- KiB
    out.parallel = p.parallel and integer(op, "pbkdf.parallel", p.parallel, 1, 4)
  end
  return out
end

local function label(op, name, v, version)
  if v == nil then return nil end
  if version == 1 then check.fail(op, nil, "field '%s' is for LUKS2 only", name) end
  if type(v) ~= "string" or #v > 47 or v:find("%z") then
    check.fail(op, nil, "field '%s' must be a string of at most 47 bytes", name)
  end
  return v
end

--- Write a LUKS header and its first key slot (cryptsetup luksFormat).
-- @param dev a path, Loop or Device
-- @tparam table opts {passphrase = Key (required), version = 2 (or 1),
--   cipher = "aes-xts-plain64", key_size = 64 (bytes), volume_key = Key (default:
--   made by libcryptsetup), sector_size (LUKS2: 512 to 4096; default: as cryptsetup,
--   the device's), label =,
--   subsystem =, uuid =, pbkdf = {type = "argon2id" | "argon2i" | "pbkdf2", time = s,
--   iterations =, memory = KiB, parallel =, hash =}, progress = function | false
--   (ticks while libcryptsetup derives: devmapper.progress; if it raises, the
--   header written by then stays, and the error reaches the caller)}
-- @treturn table {slot = the key slot made, uuid = the header's UUID}
function luks.format(dev, opts)
  local op = "luks.format"
  local path = path_of(op, dev)
  opts = options(op, opts, {passphrase = true, version = true, cipher = true, key_size = true, volume_key = true,
                            sector_size = true, label = true, subsystem = true, uuid = true, pbkdf = true,
                            progress = true})
  local pass = a_key(op, "passphrase", opts.passphrase, "the first key slot's passphrase")
  local version = opts.version or 2
  if version ~= 1 and version ~= 2 then check.fail(op, nil, "field 'version' must be 1 or 2, got %s", tostring(version)) end
  local spec = opts.cipher or "aes-xts-plain64"
  local cipher, mode
  if type(spec) == "string" then cipher, mode = spec:match("^([%w_]+)%-([%w_:%-]+)$") end
  if not cipher then
    check.fail(op, nil, "field 'cipher' must be <cipher>-<mode>[-<iv>] (aes-xts-plain64, ...), got %s", check.quote(spec))
  end
  local vk = opts.volume_key and a_key(op, "volume_key", opts.volume_key, "the volume key")
  local key_size = opts.key_size or (vk and #vk) or (mode:match("^xts") and 64 or 32)
  integer(op, "key_size", key_size, 16, 512)
  if vk and #vk ~= key_size then
    check.fail(op, nil, "field 'key_size' (%d) is not the volume key's size (%d)", key_size, #vk)
  end
  local sector_size = opts.sector_size   -- nil: libcryptsetup picks, as cryptsetup does
  if sector_size ~= nil then
    if version == 1 and sector_size ~= 512 then check.fail(op, nil, "field 'sector_size' must be 512 for LUKS1") end
    integer(op, "sector_size", sector_size, 512, 4096)
    if sector_size & (sector_size - 1) ~= 0 then check.fail(op, nil, "field 'sector_size' must be a power of 2") end
  end
  if opts.uuid ~= nil and (type(opts.uuid) ~= "string" or not opts.uuid:match("^%x+%-%x+%-%x+%-%x+%-%x+$") or #opts.uuid ~= 36) then
    check.fail(op, nil, "field 'uuid' must be a UUID (8-4-4-4-12 hex digits)")
  end
  local slot, uuid = kernel.call("luks_format", path, {
    type = version == 1 and "luks1" or "luks2", cipher = cipher, mode = mode, key_size = key_size,
    sector_size = sector_size, label = label(op, "label", opts.label, version),
    subsystem = label(op, "subsystem", opts.subsystem, version), uuid = opts.uuid,
    pbkdf = pbkdf(op, opts.pbkdf, version), progress = progress.worker(op, opts.progress),
  }, pass, vk)
  return {slot = slot, uuid = uuid}
end

-- The header's version (1 or 2; 2 in a dry run, which reads no header).
local function version_of(path)
  local info = kernel.call("luks_info", path)
  return info and info.version or 2
end

-- A wrong passphrase (or volume key) is its own, catchable error: err.wrong_key.
local function call(op, ...)
  local ok, err = pcall(kernel.call, op, ...)
  if ok then return err end
  if type(err) == "table" and err.errno == 1 then err.wrong_key = true end
  error(err, 0)
end

--- Open a LUKS volume as a device-mapper device.
-- As `cryptsetup open --type luks`.
-- The device is tracked by an open dm.scope() (closed with it).
-- @param dev a path, Loop or Device
-- @tparam string name the device-mapper name (/dev/mapper/name)
-- @tparam table opts {passphrase = Key | keyfile = path | volume_key = Key,
--   readonly = false, discards = false, progress = function | false (ticks while
--   the key slots' PBKDF runs; if it raises, the volume is closed again)}
-- @treturn Device, with `slot` set to the key slot that opened it
-- @usage local dev = dm.luks.open(l1, "secret", {passphrase = dm.key.prompt("Passphrase: ")})
function luks.open(dev, name, opts)
  local op = "luks.open"
  local path = path_of(op, dev)
  check.name(op, name)
  opts = options(op, opts, {passphrase = true, keyfile = true, volume_key = true, readonly = true, discards = true,
                            progress = true})
  local given = (opts.passphrase and 1 or 0) + (opts.keyfile and 1 or 0) + (opts.volume_key and 1 or 0)
  if given ~= 1 then check.fail(op, name, "give exactly one of the fields 'passphrase', 'keyfile' and 'volume_key'") end
  for _, f in ipairs {"readonly", "discards"} do
    if opts[f] ~= nil and type(opts[f]) ~= "boolean" then check.fail(op, name, "field '%s' must be a boolean", f) end
  end
  local how, k, close_k = "passphrase", opts.passphrase, nil
  if opts.volume_key then how, k = "volume_key", a_key(op, "volume_key", opts.volume_key, "the volume key") end
  if opts.keyfile then
    if type(opts.keyfile) ~= "string" then check.fail(op, name, "field 'keyfile' must be a path") end
    k = key.read(opts.keyfile, {newline = false})   -- read whole ("-": all of stdin), as cryptsetup --key-file
    close_k = k
  end
  a_key(op, how, k, "the passphrase")
  local tick = progress.worker(op, opts.progress)
  local ok, slot = pcall(call, "luks_open", path, name, how, k, {readonly = opts.readonly, discards = opts.discards,
                                                                 progress = tick})
  if close_k then close_k:close() end
  if not ok then error(slot, 0) end
  local d = device.named(name)
  d.slot = slot and slot >= 0 and slot or nil
  scope.track("LUKS volume " .. name, function()
    -- still this volume (libcryptsetup's UUID), not another device made under the name since
    local info = kernel.call("dm_info", name)
    if info and (info.uuid or ""):match("^CRYPT%-LUKS") then kernel.call("cryptsetup_close", name) end
  end)
  return d
end

--- Close an open LUKS volume (cryptsetup close); any crypt device closes
-- so, and the keyring entries of one made by dm.create go with it.
-- @param dev the name or its Device
function luks.close(dev)
  local name = type(dev) == "table" and dev.name or dev
  check.name("luks.close", name)
  kernel.call("cryptsetup_close", name)
  local ok, err = pcall(keyring.drop, name)
  if not ok then kernel.warn(("keyring of %s: %s"):format(name, tostring(err))) end
end

--- Whether the device holds a LUKS header (cryptsetup isLuks).
function luks.is_luks(dev) return kernel.call("luks_is", path_of("luks.is_luks", dev)) end

--- The header's facts (cryptsetup luksDump): {version, uuid, label, subsystem,
-- cipher, mode, key_size (bytes), sector_size, data_offset (sectors),
-- keyslots = {{slot, state, pbkdf, hash, iterations, memory, parallel}, ...},
-- tokens = {{token, type, json (the token's definition)}, ...} (LUKS2)}.
function luks.info(dev) return kernel.call("luks_info", path_of("luks.info", dev)) end

--- Add a key slot that opens with `new` (cryptsetup luksAddKey).
-- @param dev the volume: a path, a Loop or a Device
-- @tparam table opts {passphrase = Key (one that opens it now), new = Key, slot =, pbkdf =,
--   progress = function | false (if it raises, the slot added goes again)}
-- @treturn integer the slot
function luks.add_key(dev, opts)
  local op = "luks.add_key"
  local path = path_of(op, dev)
  opts = options(op, opts, {passphrase = true, new = true, slot = true, pbkdf = true, progress = true})
  local slot = opts.slot == nil and -1 or integer(op, "slot", opts.slot, 0, 31)
  local version = version_of(path)
  return call("luks_add_key", path, a_key(op, "passphrase", opts.passphrase, "one that opens the volume now"),
              a_key(op, "new", opts.new, "the new passphrase"), slot,
              {pbkdf = pbkdf(op, opts.pbkdf, version), progress = progress.worker(op, opts.progress)})
end

--- The slot that opens with `passphrase` opens with `new` instead (cryptsetup luksChangeKey).
-- @param dev the volume: a path, a Loop or a Device
-- @tparam table opts {passphrase = Key, new = Key, pbkdf =, progress = function | false
--   (if it raises, the change made by then stands)}
-- @treturn integer the slot now holding it
function luks.change_key(dev, opts)
  local op = "luks.change_key"
  local path = path_of(op, dev)
  opts = options(op, opts, {passphrase = true, new = true, pbkdf = true, progress = true})
  local version = version_of(path)
  return call("luks_change_key", path, a_key(op, "passphrase", opts.passphrase, "the current passphrase"),
              a_key(op, "new", opts.new, "the new passphrase"),
              {pbkdf = pbkdf(op, opts.pbkdf, version), progress = progress.worker(op, opts.progress)})
end

-- The last key slot goes only when asked (cryptsetup asks before it too):
-- without one, nothing opens the volume again.
local function not_last(op, path, opts, slot)
  opts = options(op, opts, {force = true, progress = true})
  if opts.force ~= nil and type(opts.force) ~= "boolean" then check.fail(op, nil, "field 'force' must be a boolean") end
  if opts.force then return end
  local info = kernel.call("luks_info", path)
  local active = 0
  for _, s in ipairs(info and info.keyslots or {}) do
    if s.state ~= "inactive" and (slot == nil or s.slot ~= slot) then active = active + 1 end
  end
  if info and active < (slot == nil and 2 or 1) then
    check.fail(op, path, "this is the last key slot: without it nothing opens the volume (give {force = true})")
  end
end

--- Destroy the slot that opens with the passphrase (cryptsetup luksRemoveKey).
-- @param dev the volume: a path, a Loop or a Device
-- @param passphrase a Key or a string: the one its slot opens with
-- @tparam[opt] table opts {force = true: even the last slot, progress = function | false
--   (while the passphrase is checked; if it raises, nothing is destroyed)}
-- @treturn integer the slot destroyed
function luks.remove_key(dev, passphrase, opts)
  local op = "luks.remove_key"
  local path = path_of(op, dev)
  a_key(op, "passphrase", passphrase, "the passphrase to remove")
  not_last(op, path, opts)
  return call("luks_remove_key", path, passphrase, {progress = progress.worker(op, opts and opts.progress)})
end

--- Destroy a key slot without asking for its passphrase (cryptsetup luksKillSlot).
-- @param dev the volume: a path, a Loop or a Device
-- @tparam integer slot 0 to 31
-- @tparam[opt] table opts {force = true: even the last slot}
function luks.kill_slot(dev, slot, opts)
  local op = "luks.kill_slot"
  local path = path_of(op, dev)
  integer(op, "slot", slot, 0, 31)
  not_last(op, path, opts, slot)
  kernel.call("luks_kill_slot", path, slot)
end

--- Save the header and its key slots to a new file (cryptsetup luksHeaderBackup).
-- Anyone with the file and an old passphrase can open the volume: keep it as the volume.
function luks.header_backup(dev, file)
  local op = "luks.header_backup"
  if type(file) ~= "string" or file == "" then check.fail(op, nil, "field 'file' must be a path") end
  kernel.call("luks_header_backup", path_of(op, dev), file)
end

--- Put a saved header back (cryptsetup luksHeaderRestore): the key slots
-- become the backup's. The backup must match the volume's size and layout.
-- Over a LUKS header, which it destroys, only with {force = true} (cryptsetup asks).
function luks.header_restore(dev, file, opts)
  local op = "luks.header_restore"
  local path = path_of(op, dev)
  if type(file) ~= "string" or file == "" then check.fail(op, nil, "field 'file' must be a path") end
  opts = options(op, opts, {force = true})
  if opts.force ~= true and kernel.call("luks_is", path) then
    check.fail(op, path, "the device holds a LUKS header, whose key slots the backup's replace (give {force = true})")
  end
  kernel.call("luks_header_restore", path, file)
end

return luks
