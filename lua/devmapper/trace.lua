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

-- Operations whose commands can not run as they are written (a passphrase
-- or root hash the transcript does not have): comments.
local SHOWN_ONLY = {luks_format = true, luks_open = true, luks_add_key = true, luks_change_key = true,
                    luks_remove_key = true, luks_kill_slot = true, luks_header_backup = true,
                    luks_header_restore = true, cryptsetup_close = true, verity_format = true, verity_open = true}

local started = false
local names = {}    -- "7:0" and "/dev/loop0" -> "$L1"; "254:3" -> "/dev/mapper/NAME"
local loops = 0

local function out(kernel, line)
  if not started then
    started = true
    if not kernel.trace_started then kernel.out:write(HEADER) end -- (a child appends to its parent's)
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

-- Every line of a (multi-line) command as a comment.
local function comment(line) return "# " .. line:gsub("\n", "\n# ") end

-- The file a key is read from.
local function key_file(desc) return '"$DMLUA_KEYS"/' .. trace.quote(desc) end

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
    line = ("keyctl padd logon %s @u < %s"):format(trace.quote(args[1]), key_file(args[1]))
  elseif op == "ring_add" then
    line = ('keyctl padd logon %s "$(ring %s)" < %s'):format(trace.quote(args[2]), trace.quote(args[1]), key_file(args[2]))
  elseif op == "ring_link" then
    line = ('keyctl link %%logon:%s "$(ring %s)"'):format(trace.quote(args[2]), trace.quote(args[1]))
  elseif SHOWN_ONLY[op] then
    line = comment(line) .. "  (not replayable: its secret is not in the transcript)"
  end
  return line
end

local devices = 0

-- After the operation: remember what the kernel named. A device is named by
-- its path; one whose name the path can not carry as it is (a space, a
-- quote: udev escapes those) by a variable the transcript sets.
local function learn(kernel, core, op, args)
  local name = op == "dm_create" and args[1] or op == "luks_open" and args[2] or op == "verity_open" and args[3]
  if name then
    local ok, info = pcall(core.dm_info, name)
    if not (ok and info) then return end
    local devno = info.major .. ":" .. info.minor
    if name:match("^[%w%-%._+]+$") then
      names[devno] = "/dev/mapper/" .. name
    else
      devices = devices + 1
      names[devno] = "${D" .. devices .. "}"
      out(kernel, ("D%d=$(dmsetup info -c --noheadings -o major,minor --separator : -- %s)")
                  :format(devices, trace.quote(name)))
    end
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
    out(kernel, comment(named(line)))
    return run()
  end
  local r = table.pack(pcall(run))
  if not r[1] then
    out(kernel, comment(("failed: %s (%s)"):format(named(line), (tostring(r[2]):gsub("\n", " ")))))
    error(r[2], 0)
  end
  if NOOP_WHEN_FALSE[op] and r[2] == false then
    out(kernel, comment(named(line)) .. "  (there was nothing to do)")
  else
    out(kernel, adjust(op, named(line), args, r[2]))
  end
  learn(kernel, core, op, args)
  return table.unpack(r, 2, r.n)
end

--- A change the module makes outside the kernel (a file it removes, a
-- COW it zeroes), as a command.
function trace.note(kernel, line) out(kernel, named(line)) end

--- A hex key in a table, as the transcript reads it back from its file.
function trace.key_word(desc, bytes) return ("$(key_hex %s %d)"):format(trace.quote(desc), bytes) end

return trace
