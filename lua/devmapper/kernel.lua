--- Every kernel operation of the module passes through here, once.
-- This is where `--trace` prints the dmsetup/losetup equivalent of each
-- operation, where `--dry-run` stops it (answering from a model of what
-- would exist), and where specs inject a fault into the Nth operation.
-- @module devmapper.kernel
local core = require "devmapper.core"

local TRACE = os.getenv("DMLUA_TRACE")

local kernel = {
  -- dmlua --trace (DMLUA_TRACE=1: on stderr) or --trace=FILE: the transcript (devmapper.trace)
  trace = TRACE ~= nil,
  dry_run = os.getenv("DMLUA_DRY_RUN") ~= nil,
  -- dmlua --json: plans print as JSON (and dmlua reports errors as JSON)
  json = os.getenv("DMLUA_JSON") ~= nil,
  --- Specs set this to function(op, name) returning true to make that operation fail.
  fault = nil,
  --- Operations that reached the kernel, counted (specs use it to prove a no-op).
  count = {},
  out = io.stderr,
}
if TRACE and TRACE ~= "1" and TRACE ~= "" then
  -- appended: a child process with the module (a script run by the script)
  -- inherits the variable and adds its operations, in the order they happen
  kernel.out = assert(io.open(TRACE, "a"))
  kernel.out:setvbuf("line")
  kernel.trace_started = kernel.out:seek("end") > 0
end

--- For table reads: secret_word(type) says which word of a target type's
-- parameters holds a secret (set by devmapper.target from the declarations).
kernel.secret_word = nil

--- Where warnings go: bookkeeping that failed after the operation itself
-- happened (which is therefore not an error). Replace it to collect them.
function kernel.warn(msg)
  -- (a comment, in a transcript on stderr)
  io.stderr:write(kernel.trace and kernel.out == io.stderr and "# " or "", "devmapper: warning: ", msg, "\n")
end

--- The lock that serialises scripts working on the same stack prefix (as
-- lvm2 locks a volume group): held until closed (`local l <close> = ...`).
-- Scripts on other prefixes run side by side. None in a dry run.
function kernel.lock(prefix)
  if kernel.dry_run then return nil end
  return core.lock("/run/lock/lua-devmapper/" .. prefix .. ".lock")
end

--- Run fn(...) as a critical section: dmlua holds back a signal's error until
-- it ends, so that a suspend is never cut off from its resume.
function kernel.critical(fn, ...)
  if core.critical_enter then core.critical_enter() end
  local r = table.pack(pcall(fn, ...))
  if core.critical_leave then core.critical_leave() end
  if not r[1] then error(r[2], 0) end
  return table.unpack(r, 2, r.n)
end

local function q(s)
  s = tostring(s)
  if s:match("^[%w%-%./:_=@,+]+$") then return s end
  -- a transcript quotes in double quotes, where its variables expand
  if kernel.trace and not kernel.dry_run then return require("devmapper.trace").quote(s) end
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

--- A word quoted for the shell, as plans and transcripts print it.
-- @function quote
-- @local
kernel.quote = q

local function lines(targets)
  local t = {}
  for i, s in ipairs(targets) do t[i] = ("%d %d %s %s"):format(s.start, s.length, s.type, s.params) end
  return t
end

-- dmsetup reads a one-line table from --table, several lines from stdin.
local function table_arg(targets)
  local l = lines(targets)
  if kernel.trace and not kernel.dry_run then
    -- in a transcript: hex keys read back from their files; variables expand
    local trace, i = require "devmapper.trace", 0
    for j, line in ipairs(l) do
      l[j] = line:gsub("[$`\\]", "\\%0")
    end
    local text = table.concat(l, "\n"):gsub("<key>", function()
      repeat i = i + 1 until not targets[i] or targets[i].key
      local k = targets[i] and targets[i].key
      return k and trace.key_word(require("devmapper.target").key_desc(k), #k)
    end)
    if #l == 1 then return '--table "' .. text:gsub('"', '\\"') .. '"' end
    return "<<EOF\n" .. text .. "\nEOF"
  end
  if #l == 1 then return "--table " .. q(l[1]) end
  return "<<'EOF'\n" .. table.concat(l, "\n") .. "\nEOF"
end

local function flags(opts, names)
  local s = ""
  for _, n in ipairs(names) do
    if opts and opts[n[1]] then s = s .. " " .. n[2] .. (n[3] and (" " .. q(opts[n[1]])) or "") end
  end
  return s
end

-- How each operation reads as a command line.
local render = {
  dm_create = function(name, targets, o)
    return "dmsetup create " .. q(name) .. flags(o, {{"uuid", "--uuid", true}, {"readonly", "--readonly"}})
           .. " " .. (#targets == 0 and "--notable" or table_arg(targets))
  end,
  dm_load = function(name, targets, o)
    return "dmsetup load " .. q(name) .. flags(o, {{"readonly", "--readonly"}}) .. " " .. table_arg(targets)
  end,
  dm_suspend = function(name, o)
    return "dmsetup suspend" .. flags(o, {{"noflush", "--noflush"}, {"nolockfs", "--nolockfs"}}) .. " " .. q(name)
  end,
  dm_resume = function(name) return "dmsetup resume " .. q(name) end,
  dm_clear = function(name) return "dmsetup clear " .. q(name) end,
  dm_remove = function(name, o)
    return "dmsetup remove" .. flags(o, {{"deferred", "--deferred"}}) .. " --retry " .. q(name)
  end,
  dm_rename = function(name, new) return "dmsetup rename " .. q(name) .. " " .. q(new) end,
  dm_message = function(name, sector, msg) return ("dmsetup message %s %d %s"):format(q(name), sector, q(msg)) end,
  dm_table = function(name, o) return "dmsetup table" .. flags(o, {{"inactive", "--inactive"}}) .. " " .. q(name) end,
  dm_status = function(name, o) return "dmsetup status" .. flags(o, {{"inactive", "--inactive"}}) .. " " .. q(name) end,
  dm_info = function(name) return "dmsetup info " .. q(name) end,
  dm_deps = function(name) return "dmsetup deps " .. q(name) end,
  dm_list = function() return "dmsetup ls" end,
  dm_version = function() return "dmsetup version" end,
  dm_targets = function() return "dmsetup targets" end,
  loop_file = function(path, bytes) return ("truncate -s %d %s"):format(bytes, q(path)) end,
  loop_attach = function(file, o)
    return "losetup" .. flags(o, {{"readonly", "--read-only"}, {"offset", "--offset", true},
                                  {"sizelimit", "--sizelimit", true}, {"block_size", "--sector-size", true},
                                  {"direct_io", "--direct-io=on"},
                                  {"partscan", "--partscan"}})
           .. " --find --show " .. q(file)
  end,
  loop_detach = function(path) return "losetup --detach " .. q(path) end,
  loop_info = function(path) return "losetup --list " .. q(path) end,
  loop_find = function(file) return "losetup --associated " .. q(file) end,
  key_add = function(desc) return "keyctl padd logon " .. q(desc) .. " @u <key>" end,
  key_unlink = function(desc) return "keyctl unlink %logon:" .. q(desc) .. " @u" end,
  -- a ring (keyring "devmapper:dev:NAME" in @u) is made when missing, never replaced
  ring_add = function(ring, desc)
    return ("keyctl padd logon %s %%:%s <key>"):format(q(desc), q(ring))
  end,
  ring_link = function(ring, desc) return ("keyctl link %%logon:%s %%:%s"):format(q(desc), q(ring)) end,
  ring_unlink = function(ring, desc) return ("keyctl unlink %%logon:%s %%:%s"):format(q(desc), q(ring)) end,
  ring_keys = function(ring) return "keyctl rlist %:" .. q(ring) end,
  ring_drop = function(ring) return ("keyctl clear %%:%s && keyctl invalidate %%:%s"):format(q(ring), q(ring)) end,
  rings = function() return "keyctl rlist @u" end,
  -- LUKS through libcryptsetup: what the cryptsetup command would be asked
  luks_format = function(path, o)
    return ("cryptsetup luksFormat --batch-mode --type %s --cipher %s-%s --key-size %d%s --key-file <passphrase> %s")
           :format(o.type, o.cipher, o.mode, o.key_size * 8, o.sector_size and " --sector-size " .. o.sector_size or "", q(path))
  end,
  luks_open = function(path, name, how, _, o)
    return ("cryptsetup open --type luks%s%s %s %s"):format(flags(o, {{"readonly", "--readonly"}, {"discards", "--allow-discards"}}),
           how == "volume_key" and " --volume-key-file <key>" or " --key-file <passphrase>", q(path), q(name))
  end,
  cryptsetup_close = function(name) return "cryptsetup close " .. q(name) end,
  verity_format = function(data, hash, o)
    return ("veritysetup format%s %s %s"):format(flags(o, {{"hash", "--hash", true}, {"data_block_size", "--data-block-size", true},
           {"hash_block_size", "--hash-block-size", true}, {"data_blocks", "--data-blocks", true},
           {"hash_offset", "--hash-offset", true}, {"uuid", "--uuid", true}}), q(data), q(hash))
  end,
  verity_open = function(data, hash, name, _, o)
    local how = name and "open" or "verify"
    return ("veritysetup %s%s %s %s%s <root hash>"):format(how, flags(o, {{"hash_offset", "--hash-offset", true}}),
           q(data), name and q(name) .. " " or "", q(hash))
  end,
  luks_is = function(path) return "cryptsetup isLuks " .. q(path) end,
  luks_info = function(path) return "cryptsetup luksDump " .. q(path) end,
  luks_add_key = function(path, _, _, slot)
    return ("cryptsetup luksAddKey%s --key-file <passphrase> %s <new passphrase>")
           :format(slot >= 0 and " --key-slot " .. slot or "", q(path))
  end,
  luks_change_key = function(path) return "cryptsetup luksChangeKey --key-file <passphrase> " .. q(path) .. " <new passphrase>" end,
  luks_remove_key = function(path) return "cryptsetup luksRemoveKey " .. q(path) .. " <passphrase>" end,
  luks_header_backup = function(path, file)
    return ("cryptsetup luksHeaderBackup %s --header-backup-file %s"):format(q(path), q(file))
  end,
  luks_header_restore = function(path, file)
    return ("cryptsetup luksHeaderRestore --batch-mode %s --header-backup-file %s"):format(q(path), q(file))
  end,
  luks_kill_slot = function(path, slot) return ("cryptsetup luksKillSlot --batch-mode %s %d"):format(q(path), slot) end,
}

-- What --dry-run answers: a model of the devices and loops that would exist.
local dry = {devices = {}, loops = {}, rings = {}, next_minor = 0, next_loop = 0}

local function dry_sorted(set, prefix)
  local l = {}
  for k in pairs(set) do
    if k:sub(1, #(prefix or "")) == (prefix or "") then l[#l + 1] = k end
  end
  table.sort(l)
  return l
end

local dry_ops = {
  dm_create = function(name, targets, o)
    dry.devices[name] = {targets = targets, minor = dry.next_minor, uuid = o and o.uuid}
    dry.next_minor = dry.next_minor + 1
  end,
  dm_load = function(name, targets) if dry.devices[name] then dry.devices[name].inactive = targets end end,
  dm_resume = function(name)
    local d = dry.devices[name]
    if d and d.inactive then d.targets, d.inactive = d.inactive, nil end
  end,
  dm_remove = function(name) dry.devices[name] = nil end,
  dm_rename = function(name, new) dry.devices[new], dry.devices[name] = dry.devices[name], nil end,
  dm_table = function(name, o)
    local d = dry.devices[name]
    return d and (o and o.inactive and d.inactive or d.targets) or {}
  end,
  dm_status = function() return {} end,
  dm_info = function(name)
    local d = dry.devices[name]
    if not d then return nil end
    return {name = name, uuid = d.uuid, exists = true, suspended = false, readonly = false, live_table = true,
            inactive_table = d.inactive ~= nil, open_count = 0, event_nr = 0, major = 253, minor = d.minor,
            target_count = #d.targets}
  end,
  dm_deps = function() return {} end,
  dm_list = function()
    local l = {}
    for name, d in pairs(dry.devices) do l[#l + 1] = {name = name, major = 253, minor = d.minor} end
    table.sort(l, function(a, b) return a.name < b.name end)
    return l
  end,
  dm_version = function() return "dry-run" end,
  dm_targets = function() return {} end,
  loop_file = function(path, bytes) dry.loops[path] = {bytes = bytes} end,
  loop_attach = function(file, o)
    local n = dry.next_loop
    dry.next_loop = n + 1
    local bytes = (dry.loops[file] or {}).bytes
    if not bytes then
      local f = io.open(file, "rb")
      bytes = f and f:seek("end") or 0
      if f then f:close() end
    end
    local l = {path = "/dev/loop" .. n .. "?", number = n, major = 7, minor = 1000 + n,
               backing_file = file, sectors = (bytes - (o and o.offset or 0)) // 512, block_size = o and o.block_size}
    dry.loops[l.path] = l
    return {path = l.path, number = n, major = 7, minor = l.minor}
  end,
  loop_detach = function(path) dry.loops[path] = nil end,
  loop_info = function(path) return dry.loops[path] end,
  loop_find = function() return {} end,
  key_add = function(desc) return desc end,
  ring_add = function(ring, desc, k)
    dry.rings[ring] = dry.rings[ring] or {}
    dry.rings[ring][desc] = true
    return (":%d:logon:%s"):format(#k, desc)
  end,
  ring_link = function(ring, desc)
    for _, r in pairs(dry.rings) do
      if r[desc] then
        dry.rings[ring] = dry.rings[ring] or {}
        dry.rings[ring][desc] = true
        return true
      end
    end
    return false
  end,
  ring_unlink = function(ring, desc)
    local r = dry.rings[ring]
    if not (r and r[desc]) then return false end
    r[desc] = nil
    return true
  end,
  ring_keys = function(ring) return dry.rings[ring] and dry_sorted(dry.rings[ring]) end,
  ring_drop = function(ring)
    local had = dry.rings[ring] ~= nil
    dry.rings[ring] = nil
    return had
  end,
  rings = function(prefix) return dry_sorted(dry.rings, prefix or "devmapper:") end,
}

--- The command line an operation reads as (for plans).
-- @tparam string op a core function name, then its arguments
-- @local
function kernel.render(op, ...) return render[op](...) end

-- Operations that wait for udev answer a warning when the wait gave up.
local WAITS_FOR_UDEV = {dm_create = true, dm_resume = true, dm_remove = true, dm_rename = true}

-- The operation itself, counted.
local function run(op, ...)
  kernel.count[op] = (kernel.count[op] or 0) + 1
  if op == "dm_table" or op == "dm_status" then
    -- the C core masks (or hands back as a Key) the words the declarations say are secret
    local name, o = ...
    local with = {secret = kernel.secret_word}
    for k, v in pairs(o or {}) do with[k] = v end
    return core[op](name, with)
  end
  if WAITS_FOR_UDEV[op] then
    local note = core[op](...)
    if note then kernel.warn(note) end
    return
  end
  return core[op](...)
end

--- Call core[op](...) through the trace, dry-run and fault hooks.
-- @tparam string op a core function name ("dm_create", "loop_attach", ...)
-- @local
function kernel.call(op, ...)
  local busy = core.busy and core.busy()
  if busy then
    -- a progress callback while libcryptsetup works in a worker thread (devmapper.progress)
    core.error {op = op:gsub("^%a+_", ""), errno = 16,
                message = ("the module is busy (%s runs in another thread): a progress callback must not call it (Device or resource busy)"):format(busy)}
  end
  if kernel.fault and kernel.fault(op, ...) then
    core.error {op = op:gsub("^%a+_", ""), name = tostring((...)), errno = 5, message = "injected fault"}
  end
  if not kernel.dry_run then
    -- device-mapper first, so that a script on a machine without it stops
    -- before it attaches a loop; the keyring needs neither
    local area = op:match("^(%a+)_")
    if area == "dm" or area == "loop" or op == "luks_open" or op == "verity_open" or op == "cryptsetup_close" then core.preflight("dm") end
    if area == "loop" then core.preflight("loop") end
  end
  if kernel.dry_run then
    kernel.out:write("(dry-run) ", render[op](...), "\n")
    local f = dry_ops[op]
    if f then return f(...) end
    return nil
  end
  if kernel.trace then
    local args = table.pack(...)
    return require("devmapper.trace").call(kernel, core, op, args, function()
      return run(op, table.unpack(args, 1, args.n))
    end)
  end
  return run(op, ...)
end

--- A change the module makes outside the kernel (a file it removes), shown
-- in a dry run and written to a transcript as the command it stands for.
-- @local
function kernel.note(line)
  if kernel.dry_run then kernel.out:write("(dry-run) ", line, "\n")
  elseif kernel.trace then require("devmapper.trace").note(kernel, line) end
end


--- The bound, in seconds, on each wait for udev (30 by default): past it an
-- operation goes on without udev, libdevmapper checks the /dev/mapper node
-- itself, and a warning says what was stuck.
-- @tparam[opt] number seconds a new bound
-- @treturn number the bound
function kernel.udev_timeout(seconds) return core.dm_udev_timeout(seconds) end

--- Block-device facts (sysfs reads, not kernel operations: never traced).
-- In a dry run, the loops and devices that would exist answer too.
-- @tparam string dev a path or "major:minor"
-- @tparam[opt] boolean brief only what a table's checks need (see core.blkdev)
-- @local
function kernel.blkdev(dev, brief)
  if kernel.dry_run then
    local l = dry.loops[dev]
    for _, x in pairs(dry.loops) do
      if x.major and ("%d:%d"):format(x.major, x.minor) == dev then l = x end
    end
    if l and l.major then
      return {path = l.path, major = 7, minor = l.minor, sectors = l.sectors, logical_block_size = l.block_size or 512,
              loop_backing = l.backing_file, holders = {}}
    end
    local name = dev:match("^/dev/mapper/(.+)$")
    for n, d in pairs(dry.devices) do
      if n == name or dev == "253:" .. d.minor then
        local last = d.targets[#d.targets]
        return {path = "/dev/mapper/" .. n, major = 253, minor = d.minor, dm_name = n,
                sectors = last.start + last.length, logical_block_size = 512, holders = {}}
      end
    end
  end
  return core.blkdev(dev, brief)
end

--- Total kernel operations counted so far (for specs).
-- @local
function kernel.total()
  local n = 0
  for _, c in pairs(kernel.count) do n = n + c end
  return n
end

return kernel
