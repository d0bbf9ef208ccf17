-- Helpers for specs: scratch loops, the dmsetup oracle, leftovers checks.
local dm = require "devmapper"
-- busted gives specs luassert as `assert`; modules they load see the plain one
local assert = require "luassert"

local support = {}

-- Scratch loops, deferred cleanups and devices removed after each test come
-- from devmapper.testing, the helpers users' specs get.
local testing = require "devmapper.testing"
support.defer, support.cleanup, support.tmpdir = testing.defer, testing.cleanup, testing.tmpdir
support.loops, support.device = testing.loops, testing.device

--- Write a whole file (a script, a key, a transcript) for a test.
function support.file(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

--- Run a shell command (the oracles: dmsetup, cryptsetup, ...); output, exit status.
function support.sh(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("a")
  local ok, _, code = p:close()
  return out, ok and 0 or code
end

--- dmsetup as the oracle (no udev in the sandbox: it makes its own nodes).
function support.dmsetup(args)
  local out, code = support.sh("DM_DISABLE_UDEV=1 dmsetup " .. args)
  return (out:gsub("%s+\n", "\n"):gsub("%s+$", "")), code
end

--- Whether dmsetup table --showkeys of a device holds this key (a boolean,
-- so that a failing spec prints no key).
function support.table_holds_key(name, key)
  return support.dmsetup("table --showkeys " .. name):find(key:hex(), 1, true) ~= nil
end

--- Read n bytes at a byte offset of a block device or file.
function support.read(path, offset, n)
  local f = assert(io.open(path, "rb"))
  f:seek("set", offset)
  local s = f:read(n)
  f:close()
  return s
end

--- Write a string at a byte offset, then flush it through to the device.
function support.write(path, offset, s)
  local f = assert(io.open(path, "r+b"))
  f:seek("set", offset)
  f:write(s)
  f:close()
  os.execute("sync")
end

--- Whether a path opens (the file is closed again at once).
function support.opens(path, mode)
  local f = io.open(path, mode or "rb")
  if f then f:close() end
  return f ~= nil
end

--- Whether a write to a device goes through (a read-only device refuses it).
function support.writable(path)
  local f = io.open(path, "r+b")
  if not f then return false end
  local ok = f:write(("x"):rep(512)) and f:flush()
  f:close()
  return ok and true or false
end

--- The names of the device-mapper devices now present.
function support.names()
  local t = {}
  for _, d in ipairs(dm.list()) do t[#t + 1] = d.name end
  table.sort(t)
  return t
end

--- Whole-table text as dmsetup prints it (trailing blanks dropped).
function support.text(t) return (tostring(t):gsub("%s+\n", "\n"):gsub("%s+$", "")) end

--- A refusal before the kernel: an error object with EINVAL whose text holds pattern.
function support.refused(f, pattern)
  local ok, err = pcall(f)
  assert.is_false(ok, "expected a refusal")
  assert.equal("table", type(err))
  assert.equal(22, err.errno)
  assert.matches(pattern, tostring(err), 1, true)
  return err
end

--- Run fn in dry-run mode; the command lines it would have run, as text.
function support.dry(fn)
  local k = dm.kernel
  local was, out, text = k.dry_run, k.out, {}
  k.dry_run, k.out = true, {write = function(_, ...) text[#text + 1] = table.concat {...} end}
  local ok, err = pcall(fn)
  k.dry_run, k.out = was, out
  if not ok then error(err, 0) end
  return (table.concat(text):gsub("%(dry%-run%) ", ""))
end

--- State-changing operations: the ones a fault is injected into, and counted.
support.CHANGING = {dm_create = true, dm_load = true, dm_suspend = true, dm_resume = true, dm_remove = true,
                    dm_clear = true, dm_rename = true, dm_message = true, loop_attach = true, loop_detach = true}

--- How many state-changing operations ran so far.
function support.changing()
  local n = 0
  for op, c in pairs(dm.kernel.count) do if support.CHANGING[op] then n = n + c end end
  return n
end

--- Make the nth state-changing operation from now fail.
function support.fail_nth(n)
  local i = 0
  dm.kernel.fault = function(op)
    if support.CHANGING[op] then i = i + 1 end
    return support.CHANGING[op] and i == n
  end
end

--- A core dump of a child running `script` under dmlua, taken once the
-- script writes "ready" to stdout (it then waits on stdin): the dump's bytes.
-- dir is a scratch directory of the test (its FIFO, output and dump go there).
function support.core_dump(dir, script)
  local cmd = ("mkfifo %s/in; (build/dmlua %s < %s/in > %s/out 2>&1 &) ; exec 3>%s/in; "
               .. "for i in $(seq 600); do grep -q ready %s/out 2>/dev/null && break; sleep 0.1; done; "
               .. "pid=$(pgrep -f 'dmlua %s'); gcore -o %s/core $pid >/dev/null 2>&1; echo $pid; exec 3>&-")
              :format(dir, script, dir, dir, dir, dir, script, dir)
  local pid = support.sh(cmd):match("(%d+)%s*$")
  assert.truthy(pid, "the child ran: " .. tostring(support.read(dir .. "/out", 0, 4096)))
  local core = io.open(dir .. "/core." .. pid, "rb")
  assert.truthy(core, "gcore wrote a dump")
  local dump = core:read("a")
  core:close()
  assert.truthy(#dump > 100000, "a real dump")
  return dump
end

--- Whether two values are deeply equal (a boolean, for specs that go on either way).
function support.same(a, b)
  return require("luassert.util").deepcompare(a, b, true)
end

--- A resolution context over made-up devices (no kernel needed):
-- {["7:0"] = {path =, major =, minor =, sectors =, logical_block_size =}, ...}.
function support.fake(devs)
  local ctx = {}
  function ctx.facts(d)
    local f = devs[type(d) == "table" and d.path or d]
    if not f then error(require("devmapper.check").fail("table", nil, "unknown device " .. tostring(d)), 0) end
    return f
  end
  function ctx.name(d) return (ctx.facts(d).path) end
  function ctx.dev(d) local f = ctx.facts(d) return f.major .. ":" .. f.minor end
  return ctx
end

--- Every device and its live table.
function support.world()
  local w = {}
  for _, d in ipairs(dm.list()) do w[d.name] = support.text(dm.device(d.name):table()) end
  return w
end

--- No device is left suspended or with an inactive table.
function support.none_suspended()
  for _, d in ipairs(dm.list()) do
    local info = dm.device(d.name):info()
    assert.is_false(info.suspended, d.name .. " was left suspended")
    assert.is_false(info.inactive_table, d.name .. " was left with an inactive table")
  end
end

return support
