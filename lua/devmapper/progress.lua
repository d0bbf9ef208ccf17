--- Progress of long work: key derivation calibration, LUKS key slot
-- derivation (libcryptsetup's PBKDF), a snapshot merge. Each of those
-- calls takes `progress =` in its options: a function called with one
-- table per tick, `false` (no callback for that call), or nil/true (the
-- module-wide default, `dm.progress`, nil unless set: the module itself
-- prints nothing). dmlua sets the default to `progress.draw` when stderr is
-- a terminal.
--
-- A tick: {op = "luks.format", phase = "calibrate" | "derive" | "merge",
-- done = integer, total = integer or nil (not known ahead), unit = "ms" |
-- "sectors", what = "argon2id" | "pbkdf2-sha256" | ... (when known),
-- finished = true (the phase's last tick)}. `done` never decreases within a
-- phase. An error raised by the callback stops the operation: it reaches
-- the caller after what the operation made is undone (see each operation).
-- @module devmapper.progress
local check = require "devmapper.check"

local progress = {
  --- The default callback (dm.progress): nil, or a function.
  default = nil,
}

--- The callback a call's `progress` option asks for: the function given,
-- nil for false, the default for nil or true.
-- @tparam string op the operation, for the error
-- @param opt the option's value
-- @treturn function or nil
function progress.of(op, opt)
  if opt == nil or opt == true then return progress.default end
  if opt == false then return nil end
  if type(opt) ~= "function" then
    check.fail(op, nil, "field 'progress' must be a function, true or false, got %s", type(opt))
  end
  return opt
end

--- The callback for work that runs in a worker thread (libcryptsetup):
-- while it runs the module refuses to be called (libdevmapper and
-- libcryptsetup are busy in the other thread); the C core keeps that state
-- (core.busy()), so a signal's error in the callback cannot leave it set.
-- @tparam string op
-- @param opt the option's value
-- @treturn function or nil
function progress.worker(op, opt) return progress.of(op, opt) end

local function amount(n, unit)
  if unit == "ms" then return ("%.1f s"):format(n / 1000) end
  if unit == "sectors" then
    local b = n * 512
    if b >= 1 << 30 then return ("%.1f GiB"):format(b / (1 << 30)) end
    if b >= 1 << 20 then return ("%.1f MiB"):format(b / (1 << 20)) end
    return ("%d KiB"):format(b // 1024)
  end
  return ("%d %s"):format(n, unit or "")
end

--- The line a tick reads as: "luks.format: derive (argon2id) 1.2 s",
-- "snapshot.commit: merge 3.0 MiB of 8.0 MiB (37%)".
-- @tparam table p a tick
-- @treturn string
function progress.line(p)
  local s = ("%s: %s"):format(p.op, p.phase)
  if p.what then s = s .. " (" .. p.what .. ")" end
  s = s .. " " .. amount(p.done, p.unit)
  if p.total and p.total > 0 then
    s = s .. (" of %s (%d%%)"):format(amount(p.total, p.unit), math.min(100, p.done * 100 // p.total))
  end
  return s
end

--- Whether draw has a line on the terminal now.
progress.drawn = false

--- dmlua's default on a terminal: one line on stderr, redrawn in place at
-- each tick and cleared at the phase's last.
-- @tparam table p a tick
function progress.draw(p)
  if p.finished then
    if progress.drawn then io.stderr:write("\r\27[K") end
    progress.drawn = false
    return
  end
  io.stderr:write("\r", progress.line(p), "\27[K")
  io.stderr:flush()
  progress.drawn = true
end

return progress
