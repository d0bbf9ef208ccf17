--- Keys: made, derived or read into locked C memory, wiped on close, never
-- printed. A Key (devmapper.Key) shows only its size and origin; `#k` is its
-- size, `a == b` compares in constant time, `k:hex()` is the one export.
-- Anywhere a passphrase is taken, a Key (from prompt or read) does as well
-- as a string, and keeps the passphrase out of Lua's memory.
-- @module devmapper.key
local core = require "devmapper.core"
local check = require "devmapper.check"
local kernel = require "devmapper.kernel"
local progress = require "devmapper.progress"
local scope = require "devmapper.scope"
local size = require "devmapper.size"

local key = {}

local KEY_MAX = 4096

--- Whether v is a Key (open or closed).
function key.is(v)
  local mt = type(v) == "userdata" and getmetatable(v)
  return type(mt) == "table" and mt.__name == "devmapper.Key"
end

local function fields(op, opts, known)
  if opts == nil then return {} end
  if type(opts) ~= "table" then check.fail(op, nil, "options must be a table, got %s", type(opts)) end
  for k in pairs(opts) do
    if known[k] ~= true then check.fail(op, nil, "field '%s' is not an option (known: %s)", tostring(k), known[1]) end
  end
  return opts
end

local function passphrase(op, p)
  if type(p) ~= "string" and not key.is(p) then
    check.fail(op, nil, "the passphrase must be a string or a dm.key object, got %s", type(p))
  end
  return p
end

local function key_size(op, v, default)
  if v == nil and default then return default end
  if math.type(v) ~= "integer" or v < 1 or v > KEY_MAX then
    check.fail(op, nil, "field 'size' must be an integer from 1 to %d (bytes), got %s", KEY_MAX, tostring(v))
  end
  return v
end

local function one_of(op, field, v, list)
  for _, x in ipairs(list) do
    if v == x then return v end
  end
  check.fail(op, nil, "field '%s' must be one of %s, got %s", field, table.concat(list, ", "), tostring(v))
end

local function int_at_least(op, field, v, min)
  if math.type(v) ~= "integer" or v < min then
    check.fail(op, nil, "field '%s' must be an integer >= %d, got %s", field, min, tostring(v))
  end
  return v
end

--- A key of random bytes from OpenSSL's private DRBG.
-- @tparam integer nbytes 1 to 4096
-- @treturn Key
-- @usage local k = dm.key.random(64)
function key.random(nbytes)
  if math.type(nbytes) ~= "integer" or nbytes < 1 or nbytes > KEY_MAX then
    check.fail("key.random", nil, "nbytes must be an integer from 1 to %d, got %s", KEY_MAX, tostring(nbytes))
  end
  return core.key_random(nbytes)
end

--- A key from hex digits (upper or lower case).
-- @tparam string s an even number of hex digits
-- @treturn Key
function key.from_hex(s)
  if type(s) ~= "string" then check.fail("key.from_hex", nil, "expected a string of hex digits, got %s", type(s)) end
  if #s == 0 then check.fail("key.from_hex", nil, "the hex string is empty") end
  if #s % 2 == 1 then
    check.fail("key.from_hex", nil, "odd number of hex digits (%d): each byte takes two", #s)
  end
  local bad = s:find("[^%x]")
  if bad then check.fail("key.from_hex", nil, "character %d is not a hex digit", bad) end
  if #s > 2 * KEY_MAX then check.fail("key.from_hex", nil, "a key is at most %d bytes", KEY_MAX) end
  return core.key_from_hex(s)
end

local derive_fields = {"kdf, hash, salt, size, iterations, N, r, p, time, memory, progress",
  kdf = true, hash = true, salt = true, size = true, iterations = true, N = true, r = true, p = true,
  time = true, memory = true, progress = true}

local function random_salt()
  local k = core.key_random(32)
  local salt = k:hex():gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end)
  k:close()
  return salt
end

--- Derive a key from a passphrase with PBKDF2 or scrypt (OpenSSL).
-- The cost is explicit (`iterations`; scrypt's `N`, `r`, `p`) or calibrated
-- to a CPU time (`time`, default 2 s, as cryptsetup): PBKDF2 never goes
-- below 1000 iterations; scrypt stays within `memory`. Calibration ticks
-- `progress` (default dm.progress; false: none; see devmapper.progress).
-- @param pass string or Key
-- @tparam[opt] table opts {kdf = "pbkdf2"|"scrypt", hash = "sha256" (pbkdf2: any digest
--   cryptsetup takes: sha1, sha512, sha3-256, ripemd160, whirlpool, sm3, ...),
--   salt = bytes (default: 32 random bytes), size = 64, iterations =, N =, r =, p =, time = seconds,
--   memory = "128MiB" (scrypt calibration bound; bytes or a size string), progress = function | false}
-- @treturn Key
-- @treturn table the parameters that derive it again: {kdf, hash, salt, iterations, size} or
--   {kdf, salt, N, r, p, size}
-- @usage local k, params = dm.key.derive(pass, {time = 1})
-- local again = dm.key.derive(pass, params)  -- same key, no calibration
function key.derive(pass, opts)
  local op = "key.derive"
  passphrase(op, pass)
  opts = fields(op, opts, derive_fields)
  local kdf = one_of(op, "kdf", opts.kdf or "pbkdf2", {"pbkdf2", "scrypt"})
  local tick = progress.of(op, opts.progress)
  local salt = opts.salt
  if salt == nil then salt = random_salt() end
  if type(salt) ~= "string" then check.fail(op, nil, "field 'salt' must be a string of bytes, got %s", type(salt)) end
  local n = key_size(op, opts.size, 64)
  local t = opts.time
  if t ~= nil and (type(t) ~= "number" or not (t > 0 and t <= 3600)) then
    check.fail(op, nil, "field 'time' must be seconds above 0 and at most 3600, got %s", tostring(t))
  end
  if kdf == "pbkdf2" then
    local hash = opts.hash or "sha256"
    if type(hash) ~= "string" or not hash:match("^[%w%-]+$") then
      check.fail(op, nil, "field 'hash' must be a digest name (sha256, sha512, sha3-256, whirlpool, ...), got %s",
                 tostring(hash))
    end
    for _, f in ipairs {"N", "r", "p", "memory"} do
      if opts[f] ~= nil then check.fail(op, nil, "field '%s' is for scrypt, not pbkdf2", f) end
    end
    local iter = opts.iterations
    if iter ~= nil and t ~= nil then
      check.fail(op, nil, "fields 'iterations' and 'time' exclude each other: give the cost or a time to calibrate it")
    end
    if iter == nil then
      iter = core.key_calibrate("pbkdf2", hash, n, t or 2.0, nil, tick)
    end
    int_at_least(op, "iterations", iter, 1)
    -- a calibrated cost takes about the time asked: the ticks' total
    local ms = opts.iterations == nil and math.floor((t or 2.0) * 1000 + 0.5) or nil
    return core.key_pbkdf2(pass, hash, salt, iter, n, tick, ms), {kdf = kdf, hash = hash, salt = salt, iterations = iter, size = n}
  end
  if opts.hash ~= nil then check.fail(op, nil, "field 'hash' is for pbkdf2 (scrypt has its own)") end
  if opts.iterations ~= nil then check.fail(op, nil, "field 'iterations' is for pbkdf2; scrypt takes N, r, p") end
  local N, r, p = opts.N, opts.r, opts.p
  if t ~= nil and (N or r or p) then
    check.fail(op, nil, "fields 'N', 'r', 'p' and 'time' exclude each other: give the cost or a time to calibrate it")
  end
  if N == nil and r == nil and p == nil then
    local mem = opts.memory
    if mem == nil then
      mem = 128 * 1024 * 1024
    elseif type(mem) == "string" then
      mem = size.bytes(mem, "memory")
    elseif math.type(mem) ~= "integer" then
      check.fail(op, nil, "field 'memory' must be bytes or a size like \"256MiB\", got %s", tostring(mem))
    end
    if mem < 2 * 1024 * 1024 then check.fail(op, nil, "field 'memory' must be at least 2 MiB, got %d bytes", mem) end
    N, r, p = core.key_calibrate("scrypt", nil, n, t or 2.0, mem, tick)
  elseif opts.memory ~= nil then
    check.fail(op, nil, "field 'memory' bounds calibration; with N, r, p the memory is 128 * r * N bytes")
  end
  int_at_least(op, "N", N, 2)
  if N & (N - 1) ~= 0 then check.fail(op, nil, "field 'N' must be a power of 2, got %d", N) end
  r = int_at_least(op, "r", r or 8, 1)
  p = int_at_least(op, "p", p or 1, 1)
  local ms = opts.N == nil and opts.r == nil and opts.p == nil and math.floor((t or 2.0) * 1000 + 0.5) or nil
  return core.key_scrypt(pass, salt, N, r, p, n, tick, ms), {kdf = kdf, salt = salt, N = N, r = r, p = p, size = n}
end

--- The key cryptsetup's plain mode makes from a passphrase, so a
-- volume opens with either tool (`cryptsetup open --type plain`).
-- `hash` is a digest ("sha256", "ripemd160", ...), hashed in rounds when the
-- key is longer than one digest; "name:n" fills n bytes and pads with zeros;
-- "plain" uses the passphrase bytes, cut to size or padded with zeros.
-- (cryptsetup hashes a passphrase typed or piped in; with --key-file FILE it
-- ignores --hash and reads the key from the file: use dm.key.read for that.)
-- @param pass string or Key
-- @tparam table opts {hash =, size = bytes}: both required (cryptsetup's
--   defaults changed between versions)
-- @treturn Key
-- @usage local k = dm.key.plain(pass, {hash = "sha256", size = 64}) -- --hash sha256 --key-size 512
function key.plain(pass, opts)
  local op = "key.plain"
  passphrase(op, pass)
  opts = fields(op, opts, {"hash, size", hash = true, size = true})
  local hash = opts.hash
  if type(hash) ~= "string" or not hash:match("^[%w%-]+$") and not hash:match("^[%w%-]+:%d+$") then
    check.fail(op, nil, "field 'hash' must be \"plain\" or a digest name such as sha256, with an optional \":bytes\", got %s",
               tostring(hash))
  end
  return core.key_plain(pass, hash, key_size(op, opts.size))
end

--- Ask for a passphrase on the terminal (/dev/tty), without echo, into locked memory.
-- @tparam[opt="Passphrase: "] string text
-- @tparam[opt] table opts {verify = false (ask twice), max = 512 (bytes, as cryptsetup)}
-- @treturn Key
-- @usage local pass <close> = dm.key.prompt("Passphrase for secret: ")
function key.prompt(text, opts)
  local op = "key.prompt"
  if text ~= nil and type(text) ~= "string" then check.fail(op, nil, "text must be a string, got %s", type(text)) end
  opts = fields(op, opts, {"verify, max", verify = true, max = true})
  return core.key_prompt(text, int_at_least(op, "max", opts.max or 512, 1), opts.verify)
end

--- Read a passphrase or key file into locked memory, by cryptsetup's rules:
-- a terminal gives one line (echo off); stdin ("-" or fd 0) ends at a
-- newline; a file is read whole, newlines and all. Empty input, and input
-- over `max`, are refused.
-- @param source a path, "-" for stdin, or a file descriptor (integer)
-- @tparam[opt] table opts {size = exact bytes to read (0: all, as cryptsetup), max = 8 MiB (as cryptsetup),
--   offset = bytes to skip, newline = end at a newline (default: only for stdin and terminals)}
-- @treturn Key
-- @usage local k = dm.key.read("/etc/keys/secret.key", {size = 64})
function key.read(source, opts)
  local op = "key.read"
  if type(source) ~= "string" and not (math.type(source) == "integer" and source >= 0) then
    check.fail(op, nil, "source must be a path, \"-\" or a file descriptor, got %s", tostring(source))
  end
  opts = fields(op, opts, {"size, max, offset, newline", size = true, max = true, offset = true, newline = true})
  -- size 0 is no limit, as cryptsetup's --keyfile-size 0
  local n = opts.size ~= nil and int_at_least(op, "size", opts.size, 0) or nil
  if n == 0 then n = nil end
  local max = int_at_least(op, "max", opts.max or 8192 * 1024, 1)
  if n and n > max then check.fail(op, nil, "field 'size' (%d) is over field 'max' (%d)", n, max) end
  local offset = int_at_least(op, "offset", opts.offset or 0, 0)
  if opts.newline ~= nil and type(opts.newline) ~= "boolean" then
    check.fail(op, nil, "field 'newline' must be a boolean, got %s", type(opts.newline))
  end
  return core.key_read(source, n, max, offset, opts.newline)
end

local function description(op, desc)
  if type(desc) ~= "string" or #desc > 4095 or not desc:match("^devmapper:[!-~]+$") then
    check.fail(op, nil, "keyring description must look like \"devmapper:NAME\" (printable, no spaces, "
               .. "at most 4095 bytes), got %s", type(desc) == "string" and ("%q"):format(desc) or type(desc))
  end
  return desc
end

--- Put the key in the user keyring (@u) as a `logon` key, which the kernel
-- keeps from user space. A scope that is open takes it out again.
-- @function Key:to_keyring
-- @within Class Key
-- @tparam[opt] string desc "devmapper:..." (default: a random one)
-- @treturn string the reference dm-crypt tables take: ":<size>:logon:<desc>"
-- @usage local ref = k:to_keyring("devmapper:secret")  -- ":64:logon:devmapper:secret"
function core.key_methods.to_keyring(k, desc)
  local op = "key.to_keyring"
  if desc == nil then
    local r = core.key_random(8)
    desc = "devmapper:" .. r:hex()
    r:close()
  end
  description(op, desc)
  local bytes = #k -- raises if closed
  kernel.call("key_add", desc, k)
  scope.track("key " .. desc, function() pcall(kernel.call, "key_unlink", desc) end)
  return (":%d:logon:%s"):format(bytes, desc)
end

--- Take a logon key out of the user keyring (invalidated, or unlinked from @u).
-- @tparam string desc "devmapper:..."
-- @treturn boolean true if there was such a key
function key.unlink(desc)
  return kernel.call("key_unlink", description("key.unlink", desc)) == true
end

return key
