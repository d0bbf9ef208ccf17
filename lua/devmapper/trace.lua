--- The --trace transcript: a bash script that, run on a fresh kernel with
-- dmsetup, losetup and keyctl, makes the same devices the script made.
-- Each kernel operation is written once it has happened (a failed one as a
-- comment), loops as variables ($L1, ...) and device-mapper devices by name
-- instead of this run's numbers, keys read from files in $DMLUA_KEYS (named
-- by their descriptions: the script's keys are never written), and reads
-- (existence probes, table and status reads) as comments.
local trace = {}

local HEADER = [[
#!/bin/bash
# lua-devmapper transcript (dmlua --trace): run it with bash on a fresh kernel
# to make the same devices with dmsetup, losetup and keyctl. Keys are read
# from $DMLUA_KEYS/<description> (each file holds a key's bytes); the script
# that made this never wrote a key here.
set -e
key_hex() {  # key_hex DESCRIPTION BYTES: the key, in hex, for a table
  [ "$(stat -c %s "$DMLUA_KEYS/$1")" = "$2" ] || { echo "$DMLUA_KEYS/$1 must hold $2 bytes" >&2; exit 1; }
  od -An -v -tx1 "$DMLUA_KEYS/$1" | tr -d ' \n'
}
ring() { keyctl search @u keyring "$1" 2>/dev/null || keyctl newring "$1" @u; }
]]

-- Reads: shown as comments, since they change nothing.
local READS = {dm_info = true, dm_table = true, dm_status = true, dm_deps = true, dm_list = true,
               dm_version = true, dm_targets = true, loop_info = true, loop_find = true, ring_keys = true,
               rings = true, luks_is = true, luks_info = true}

-- Changes that answer false when there was nothing to change (a ring to drop
-- that was never made): comments, since the command would fail.
local NOOP_WHEN_FALSE = {ring_drop = true, ring_unlink = true, ring_link = true, key_unlink = true}

local started = false
local names = {}    -- "7:0" and "/dev/loop0" -> "$L1"; "254:3" -> "/dev/mapper/NAME"
local loops = 0

local function out(kernel, line)
  if not started then
    started = true
    kernel.out:write(HEADER)
  end
  kernel.out:write(line, "\n")
end

--- A string as one bash word, in double quotes where it needs quoting (so
-- that the variables put in for device numbers still expand).
function trace.quote(s)
  s = tostring(s)
  if s:match("^[%w%-%./:_=@,+]+$") then return s end
  return '"' .. s:gsub('[$`"\\]', "\\%0") .. '"'
end

-- This run's numbers and paths, as the transcript names them.
local function named(line)
  line = line:gsub("/dev/loop%d+", function(p) return names[p] end)
  return (line:gsub("%f[%w]%d+:%d+%f[^%w:]", function(d) return names[d] end))
end

-- What makes a line replayable: variables for new loops, keys from files.
local function adjust(op, line, args, result)
  if op == "loop_attach" then
    loops = loops + 1
    local var = "L" .. loops
    names[result.path] = "${" .. var .. "}"
    names[result.major .. ":" .. result.minor] = names[result.path]
    line = ("%s=$(%s)"):format(var, line)
    if args[2] and args[2].autoclear then line = line .. "  # autoclear: detached when its last user closes it" end
  elseif op == "key_add" then
    line = line:gsub(" <key>$", (' < "$DMLUA_KEYS/%s"'):format(args[1]))
  elseif op == "ring_add" then
    line = ('keyctl padd logon %s "$(ring %s)" < "$DMLUA_KEYS/%s"'):format(trace.quote(args[2]), trace.quote(args[1]), args[2])
  end
  return line
end

-- After the operation: remember what the kernel named.
local function learn(core, op, args)
  if op == "dm_create" then
    local ok, info = pcall(core.dm_info, args[1])
    if ok and info then names[info.major .. ":" .. info.minor] = "/dev/mapper/" .. args[1] end
  elseif op == "dm_rename" then
    for k, v in pairs(names) do if v == "/dev/mapper/" .. args[1] then names[k] = "/dev/mapper/" .. args[2] end end
  end
end

--- Run one kernel operation and write its line.
-- @tparam table kernel devmapper.kernel (out, render)
-- @tparam string op
-- @tparam table args
-- @tparam function run runs it, returning its results
function trace.call(kernel, core, op, args, run)
  local line = kernel.render(op, table.unpack(args, 1, args.n))
  if READS[op] then
    out(kernel, "# " .. named(line))
    return run()
  end
  local r = table.pack(pcall(run))
  if not r[1] then
    out(kernel, ("# failed: %s (%s)"):format(named(line), tostring(r[2]):gsub("\n", " ")))
    error(r[2], 0)
  end
  if NOOP_WHEN_FALSE[op] and r[2] == false then
    out(kernel, "# " .. named(line) .. "  (there was nothing to do)")
  else
    out(kernel, adjust(op, named(line), args, r[2]))
  end
  learn(core, op, args)
  return table.unpack(r, 2, r.n)
end

--- A change the module makes outside the kernel (a file it removes, a
-- COW it zeroes), as a command.
function trace.note(kernel, line) out(kernel, named(line)) end

--- A hex key in a table, as the transcript reads it back from its file.
function trace.key_word(desc, bytes) return ("$(key_hex %s %d)"):format(desc, bytes) end

return trace
